"""``BaseFinetuning`` and ``BackboneFinetuning``: freeze part of a model, unfreeze it later into
a new optimizer parameter group with its own learning rate (Lightning's callbacks).

Exact resume: a run resumed from a checkpoint gets back, before the optimizer state is
loaded, the parameter groups this callback added and the ``requires_grad`` and batch-norm
tracking flags it set, and an epoch whose ``finetune_function`` already ran before the
checkpoint is not finetuned twice.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenCheckpointError, FulmenUserCodeError, FulmenWarning

Modules = Union[nn.Module, Iterable[Union[nn.Module, Iterable]]]


class BaseFinetuning(Callback):
    """Subclass it and implement :meth:`freeze_before_training` (called at ``setup``, before
    ``configure_optimizers``, so the optimizer can leave the frozen parameters out) and
    :meth:`finetune_function` (called at every training epoch start, once per optimizer),
    using the static helpers :meth:`freeze`, :meth:`make_trainable` and
    :meth:`unfreeze_and_add_param_group`."""

    def __init__(self) -> None:
        # Per optimizer index, every parameter group seen at an epoch start, parameters by
        # name (Lightning's attribute): what a resumed run must rebuild before loading the
        # optimizer state, whose group count must match.
        self._internal_optimizer_metadata: Dict[int, List[Dict[str, Any]]] = {}
        self._finetuned_epoch = -1
        self._module: Optional[nn.Module] = None

    # ------------------------------------------------------------------ what subclasses write
    def freeze_before_training(self, pl_module: nn.Module) -> None:
        """Freeze what must not train at first (``self.freeze(pl_module.backbone)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement freeze_before_training(pl_module)")

    def finetune_function(self, pl_module: nn.Module, current_epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze and adjust learning rates for ``current_epoch``; called once per optimizer."""
        raise NotImplementedError(f"{type(self).__name__} must implement finetune_function(pl_module, current_epoch, optimizer)")

    # ------------------------------------------------------------------ helpers (Lightning's)
    @staticmethod
    def flatten_modules(modules: Modules) -> List[nn.Module]:
        """The modules that own parameters directly: leaves, and containers with parameters of
        their own, so each parameter is visited exactly once (``recurse=False``)."""
        if isinstance(modules, nn.ModuleDict):
            modules = list(modules.values())
        if isinstance(modules, nn.Module):
            candidates: Iterable[nn.Module] = modules.modules()
        elif isinstance(modules, Iterable):
            candidates = [m for item in modules for m in BaseFinetuning.flatten_modules(item)]
        else:
            raise FulmenUserCodeError(
                f"expected an nn.Module or an iterable of modules, got {type(modules).__name__}"
            )
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Iterator[nn.Parameter]:
        """The parameters of ``modules`` whose ``requires_grad`` equals ``requires_grad``;
        batch-norm layers' are left out when ``train_bn`` is False."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """``requires_grad=True`` for every parameter; batch norms track running statistics again."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: nn.Module) -> None:
        """Freeze one module's own parameters; a batch norm also stops updating its statistics."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; with ``train_bn`` their batch-norm layers stay trainable (the
        usual choice when finetuning on data whose statistics differ from the pretraining's)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> List[nn.Parameter]:
        """``params`` without those the optimizer already holds, with a warning naming the
        usual cause. Compared by identity: Lightning compares values (``torch.equal``), which
        also drops a new parameter that merely equals one in the optimizer (two zero biases)."""
        params = list(params)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        kept = [p for p in params if id(p) not in held]
        if len(kept) < len(params):
            warnings.warn(
                f"{len(params) - len(kept)} parameter(s) to unfreeze are already in the optimizer and were "
                "skipped; build the optimizer from the trainable parameters only, e.g. "
                f"{type(optimizer).__name__}(filter(lambda p: p.requires_grad, self.parameters()), ...)",
                FulmenWarning,
                stacklevel=3,
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: Optional[float] = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Make ``modules`` trainable and add their parameters to ``optimizer`` as a new group:
        at ``lr`` when given, else at the first group's learning rate / ``initial_denom_lr``.

        Parameters that were trainable all along and are already in the optimizer (batch norms
        kept trainable by ``freeze(train_bn=True)``) are left where they are without a warning;
        Lightning warns about them too, which makes its usual setup warn every time."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        already = {id(p) for p in BaseFinetuning.filter_params(modules, train_bn=train_bn) if id(p) in held}
        BaseFinetuning.make_trainable(modules)
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        params = [
            p for p in BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
            if id(p) not in already
        ]
        params = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr})

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, module, stage) -> None:
        """Freeze before ``configure_optimizers`` runs (it is called after ``setup``)."""
        self._module = module
        self.freeze_before_training(module)

    def on_train_epoch_start(self, trainer, module) -> None:
        """Run :meth:`finetune_function` for each optimizer and record the groups it added."""
        epoch = trainer.current_epoch
        if epoch == self._finetuned_epoch:
            return  # resumed mid-epoch: this epoch was finetuned before the checkpoint
        names = {p: n for n, p in module.named_parameters()}
        for index, optimizer in enumerate(trainer.optimizers):
            raw = getattr(optimizer, "optimizer", optimizer)
            self.finetune_function(module, epoch, raw)
            self._record(index, raw.param_groups, names)
        self._finetuned_epoch = epoch

    def _record(self, index: int, groups: List[Dict[str, Any]], names: Dict[nn.Parameter, str]) -> None:
        recorded = self._internal_optimizer_metadata.setdefault(index, [])
        for group in groups[len(recorded):]:
            entry = {k: v for k, v in group.items() if k != "params"}
            entry["params"] = [names[p] for p in group["params"]]
            recorded.append(entry)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        module = self._module if self._module is not None else nn.Module()
        return {
            "internal_optimizer_metadata": self._internal_optimizer_metadata,
            "finetuned_epoch": self._finetuned_epoch,
            # Which parameters are frozen and which batch norms stopped tracking statistics:
            # module state that the module's own state_dict does not hold.
            "frozen_parameters": [n for n, p in module.named_parameters() if not p.requires_grad],
            "untracked_batchnorms": [
                n for n, m in module.named_modules() if isinstance(m, _BatchNorm) and not m.track_running_stats
            ],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._internal_optimizer_metadata = {int(k): list(v) for k, v in state["internal_optimizer_metadata"].items()}
        self._finetuned_epoch = int(state.get("finetuned_epoch", -1))

    def on_load_checkpoint(self, trainer, module, checkpoint) -> None:
        """Put back the added parameter groups and the freezing flags. This hook fires before
        the optimizer state is loaded, which needs the groups to exist."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or trainer.stage != "fit" or "loops" not in checkpoint:
            return
        self.load_state_dict(state)
        frozen = set(state.get("frozen_parameters", []))
        for name, param in module.named_parameters():
            param.requires_grad = name not in frozen
        untracked = set(state.get("untracked_batchnorms", []))
        for name, submodule in module.named_modules():
            if isinstance(submodule, _BatchNorm):
                submodule.track_running_stats = name not in untracked
        by_name = dict(module.named_parameters())
        for index, optimizer in enumerate(trainer.optimizers):
            self._restore_groups(index, getattr(optimizer, "optimizer", optimizer), by_name)

    def _restore_groups(self, index: int, optimizer: torch.optim.Optimizer, by_name: Dict[str, nn.Parameter]) -> None:
        recorded = self._internal_optimizer_metadata.get(index, [])
        current = optimizer.param_groups
        names = {id(p): n for n, p in by_name.items()}
        existing = [[names.get(id(p)) for p in group["params"]] for group in current]
        if len(recorded) < len(current) or existing != [g["params"] for g in recorded[: len(current)]]:
            raise FulmenCheckpointError(
                f"{type(self).__name__}: optimizer {index} from configure_optimizers does not match the one "
                "the checkpoint was written with (its first parameter groups differ); resume with the same "
                "configure_optimizers and the same freeze_before_training"
            )
        for entry in recorded[len(current):]:
            missing = [n for n in entry["params"] if n not in by_name]
            if missing:
                raise FulmenCheckpointError(
                    f"{type(self).__name__}: the checkpoint's parameter group names parameters this module "
                    f"does not have ({missing[:3]}); resume with the same model"
                )
            group = {k: v for k, v in entry.items() if k != "params"}
            optimizer.add_param_group({**group, "params": [by_name[n] for n in entry["params"]]})


def multiplicative(epoch: int) -> float:
    """BackboneFinetuning's default schedule: the backbone's learning rate doubles each epoch."""
    return 2.0


class BackboneFinetuning(BaseFinetuning):
    """Train ``module.backbone`` frozen until ``unfreeze_backbone_at_epoch``, then as a new
    parameter group whose learning rate starts low and grows each epoch by ``lambda_func``.

    Args:
        unfreeze_backbone_at_epoch: the epoch (from 0) at which the backbone joins training.
        lambda_func: ``epoch -> factor``; at each later epoch the backbone's learning rate is
            multiplied by ``lambda_func(epoch + 1)``.
        backbone_initial_ratio_lr: the backbone starts at the first group's learning rate times this...
        backbone_initial_lr: ...unless this is given, an absolute starting learning rate.
        should_align: once the backbone's learning rate would pass the first group's, use
            the first group's instead.
        initial_denom_lr: passed on to :meth:`unfreeze_and_add_param_group`, which only uses it
            without an explicit ``lr`` (this callback always gives one, as Lightning's does).
        train_bn: keep the backbone's batch norms trainable while it is frozen, and include
            them in the new group.
        verbose: print both learning rates at each epoch after unfreezing.
        rounding: digits of the printed learning rates.
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: Optional[float] = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        if not callable(lambda_func):
            raise FulmenUserCodeError(f"BackboneFinetuning(lambda_func={lambda_func!r}) must be a function epoch -> factor")
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: Optional[float] = None

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.previous_backbone_lr = state.get("previous_backbone_lr")

    def freeze_before_training(self, pl_module: nn.Module) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise FulmenUserCodeError(
                f"BackboneFinetuning needs the module to have an nn.Module attribute `backbone`; "
                f"{type(pl_module).__name__} has {type(backbone).__name__ if backbone is not None else 'none'}. "
                "Assign the pretrained part to self.backbone, or subclass BaseFinetuning for another layout"
            )
        self.freeze(backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: nn.Module, current_epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if current_epoch < self.unfreeze_backbone_at_epoch:
            return
        current_lr = optimizer.param_groups[0]["lr"]
        if current_epoch == self.unfreeze_backbone_at_epoch:
            backbone_lr = (
                self.backbone_initial_lr if self.backbone_initial_lr is not None
                else current_lr * self.backbone_initial_ratio_lr
            )
            self.unfreeze_and_add_param_group(
                pl_module.backbone, optimizer, backbone_lr,
                initial_denom_lr=self.initial_denom_lr, train_bn=self.train_bn,
            )
        else:
            backbone_lr = self.lambda_func(current_epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > current_lr:
                backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
        self.previous_backbone_lr = backbone_lr
        if self.verbose:
            print_ = getattr(pl_module, "print", print)  # fulmen.Module prints on rank zero only
            print_(
                f"Current lr: {round(float(current_lr), self.rounding)}, "
                f"Backbone lr: {round(float(backbone_lr), self.rounding)}"
            )
