"""``fulmen.Module``: a ``torch.nn.Module`` plus the steps and settings a Trainer needs.

The names and meanings follow Lightning's ``LightningModule`` so that users can move code
over by changing imports. Lifecycle hooks (``on_train_epoch_end`` and the rest, see
``fulmen.hookspecs``) are ordinary methods: define the ones you need, with any subset of
the documented arguments.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from fulmen.errors import FulmenConfigError, FulmenUserCodeError
from fulmen.plugins.manager import HookCarrier
from fulmen.utilities.hparams import AttributeDict, collect_init_args, plain_hparams

HPARAMS_KEY = "hyper_parameters"


class Module(HookCarrier, nn.Module):
    """A ``torch.nn.Module`` that also says how to train itself: subclass it, define
    ``training_step`` and ``configure_optimizers``, and hand it to ``Trainer.fit``.

    Optional methods follow Lightning's ``LightningModule``: ``validation_step``,
    ``test_step``, ``predict_step``, ``configure_model`` (layers built on the target device or
    sharded), the ``*_dataloader()`` methods and any lifecycle hook of ``fulmen.hookspecs``.
    A loop whose step is missing is skipped. ``self.log`` records metrics; ``self.trainer``
    reaches the run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization: bool = True
        self._trainer = None
        self._hparams: AttributeDict = AttributeDict()

    # ------------------------------------------------------------------ the user's part
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        """Compute the loss of one training batch and return it (a tensor, or a dict with a
        ``"loss"`` entry); ``None`` skips the batch. Under manual optimization
        (``self.automatic_optimization = False``) step the optimizers here yourself."""
        raise FulmenUserCodeError(
            f"{type(self).__name__} has no training_step; define "
            "training_step(self, batch, batch_idx) returning the loss to train with Trainer.fit"
        )

    def configure_optimizers(self) -> Any:
        """Return what trains this module: an optimizer, a list of them, or Lightning's dict
        ``{"optimizer": opt, "lr_scheduler": scheduler or {"scheduler": s, "interval": "step"}}``
        (or a list of such dicts). Called once per fit, after ``configure_model``."""
        raise FulmenUserCodeError(
            f"{type(self).__name__} has no configure_optimizers; define it to return an "
            "optimizer, e.g. torch.optim.AdamW(self.parameters(), lr=1e-3)"
        )

    def setup(self, stage: str) -> None:
        """Build layers that need data or the device; called with ``stage=`` before each run."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built; called with ``stage=`` after each run."""

    # validation_step, test_step, predict_step and the *_dataloader methods are optional;
    # the Trainer looks them up with ``getattr`` and skips a loop when one is missing.

    # ------------------------------------------------------------------ trainer access
    @property
    def trainer(self):
        """The Trainer this module was last run by; raises ``FulmenConfigError`` before any
        Trainer ran it."""
        if self._trainer is None:
            raise FulmenConfigError(f"{type(self).__name__} is not attached to a Trainer")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer) -> None:
        # Stored outside nn.Module's registries so the trainer is not a submodule.
        object.__setattr__(self, "_trainer", trainer)

    @property
    def current_epoch(self) -> int:
        """The Trainer's current epoch (0 when not attached)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far in this fit (0 when not attached)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def device(self) -> torch.device:
        """The device of the first parameter (or buffer); the CPU for a module without any."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first parameter; torch's default dtype for a module without any."""
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank zero only."""
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    @property
    def global_rank(self) -> int:
        """This process's index in the job (0 when not attached)."""
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        """This process's index on its node (0 when not attached)."""
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def logger(self):
        """The Trainer's first logger; ``None`` without one or when not attached."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> List[Any]:
        """The Trainer's loggers (``[]`` when not attached)."""
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def on_gpu(self) -> bool:
        """True when the module's parameters are on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def example_input_array(self) -> Any:
        """A sample input for ``forward`` (a tensor, tuple or dict) that tools such as model
        summaries may run; ``None`` until set."""
        return self.__dict__.get("_example_input_array")

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        # Kept out of nn.Module's registries: a sample input is no buffer of the model.
        object.__setattr__(self, "_example_input_array", example)

    def freeze(self) -> None:
        """Stop every parameter from training and switch to ``eval()`` (for inference or a
        frozen backbone); :meth:`unfreeze` undoes both."""
        for parameter in self.parameters():
            parameter.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        """Let every parameter train again and switch to ``train()``."""
        for parameter in self.parameters():
            parameter.requires_grad = True
        self.train()

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Every process's tensors (nested too), stacked along a new first dimension; one
        process gets its own with that dimension of size 1. ``sync_grads=True`` lets gradients
        flow back through the gather."""
        if group is not None:
            raise FulmenConfigError(
                "self.all_gather(group=...) is not supported: fulmen gathers across all processes of the "
                "job; drop group=, or call torch.distributed.all_gather yourself for a subgroup"
            )
        return self.trainer.fabric.all_gather(data, sync_grads=sync_grads)

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: Optional[bool] = None,
        on_epoch: Optional[bool] = None,
        reduce_fx: Union[str, Any] = "mean",
        sync_dist: bool = False,
        batch_size: Optional[int] = None,
        add_dataloader_idx: bool = True,
    ) -> None:
        """Record a metric; values stay on the device until a logging interval reads them."""
        trainer = self._trainer
        if trainer is None:
            raise FulmenConfigError(
                f"self.log({name!r}) was called while {type(self).__name__} is not attached to "
                "a Trainer; with Fabric use fabric.log instead"
            )
        trainer._metrics.log(
            name, value, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch,
            reduce_fx=reduce_fx, sync_dist=sync_dist, batch_size=batch_size,
            add_dataloader_idx=add_dataloader_idx,
        )

    def log_dict(self, metrics: Mapping[str, Any], **kwargs: Any) -> None:
        """``self.log`` for every ``name: value`` of ``metrics``, with the same keyword arguments."""
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    # ------------------------------------------------------------------ optimization
    def optimizers(self, use_pl_optimizer: bool = True):
        """The optimizer(s) from ``configure_optimizers``, wrapped to run through the strategy
        (Lightning's ``LightningOptimizer`` methods: ``step(closure)``, ``zero_grad()``,
        ``toggle_model()``); ``use_pl_optimizer=False`` gives the torch optimizers themselves."""
        optimizers = self.trainer.optimizers
        if use_pl_optimizer:
            for optimizer in optimizers:
                optimizer._owner = self
        else:
            optimizers = [getattr(optimizer, "optimizer", optimizer) for optimizer in optimizers]
        return optimizers[0] if len(optimizers) == 1 else optimizers

    def lr_schedulers(self):
        """The LR scheduler(s) from ``configure_optimizers``, one or a list, or ``None``; for
        stepping them yourself under manual optimization."""
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward()`` through the strategy (scaler, sharding) and the backward hooks."""
        if self.automatic_optimization:
            raise FulmenConfigError(
                "manual_backward is for manual optimization; set self.automatic_optimization = "
                "False in __init__, or return the loss from training_step instead"
            )
        self.trainer._backward(loss, *args, **kwargs)

    def clip_gradients(self, optimizer: Any, gradient_clip_val: Optional[float] = None, gradient_clip_algorithm: Optional[str] = None) -> None:
        """Clip ``optimizer``'s gradients through the strategy (for manual optimization), by
        norm (the default) or by value, as Lightning's ``LightningModule.clip_gradients``."""
        if not gradient_clip_val:
            return
        raw = getattr(optimizer, "optimizer", optimizer)  # a FabricOptimizer or a torch optimizer
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise FulmenConfigError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}; use 'norm' or 'value'")
        if gradient_clip_algorithm == "value":
            self.trainer.strategy.clip_gradients_value(self, raw, gradient_clip_val)
        else:
            self.trainer.strategy.clip_gradients_norm(self, raw, gradient_clip_val)

    def toggle_optimizer(self, optimizer: Any) -> None:
        """Freeze every parameter that ``optimizer`` does not own (GAN-style alternation)."""
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._toggled = {p: p.requires_grad for p in self.parameters()}
        for p in self.parameters():
            if id(p) not in owned:
                p.requires_grad_(False)

    def untoggle_optimizer(self, optimizer: Any) -> None:
        """Undo :meth:`toggle_optimizer`: every parameter gets back its ``requires_grad``."""
        for p, flag in getattr(self, "_toggled", {}).items():
            p.requires_grad_(flag)
        self._toggled = {}

    # ------------------------------------------------------------------ hyperparameters
    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters :meth:`save_hyperparameters` stored, as an attribute dict
        (``self.hparams.lr``)."""
        return self._hparams

    def save_hyperparameters(self, *args: Any, ignore: Optional[List[str]] = None, frame=None) -> None:
        """Store ``__init__``'s arguments (or the named ones, or a dict) in ``self.hparams``.

        They are logged once, written into every checkpoint as plain data and used by
        ``load_from_checkpoint`` to rebuild the module.
        """
        if len(args) == 1 and isinstance(args[0], Mapping):
            values = dict(args[0])
        else:
            caller = frame or inspect.currentframe().f_back
            try:
                values = collect_init_args(caller, [str(a) for a in args], ignore)
            finally:
                del caller
        self._hparams.update(plain_hparams(values, type(self).__name__))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Union[str, Path],
        map_location: Any = None,
        strict: bool = True,
        safe_globals: Optional[List[Any]] = None,
        **kwargs: Any,
    ) -> "Module":
        """Rebuild the module from its saved hyperparameters (overridden by ``kwargs``) and
        load its weights. The file is read with ``weights_only=True`` after its checksum was
        verified; ``safe_globals`` lists classes you trust to be rebuilt from it. A checkpoint
        *directory* in a plugin's own format (DeepSpeed's ZeRO shards) is read by the plugin
        that wrote it (hook ``read_checkpoint_directory``), consolidated in CPU memory."""
        checkpoint = _read_checkpoint(checkpoint_path, map_location, safe_globals)
        if "state_dict" not in checkpoint:
            raise FulmenConfigError(
                f"{checkpoint_path} has no 'state_dict' entry; it was not written by a fulmen "
                f"Trainer (it holds {sorted(checkpoint)})"
            )
        init_args = {**checkpoint.get(HPARAMS_KEY, {}), **kwargs}
        try:
            module = cls(**init_args)
        except TypeError as exc:
            raise FulmenConfigError(
                f"cannot rebuild {cls.__name__} from the checkpoint's hyperparameters "
                f"{sorted(init_args)}: {exc}. Pass the missing arguments as keywords to "
                "load_from_checkpoint, or call save_hyperparameters() in __init__"
            ) from None
        configure_model = getattr(module, "configure_model", None)
        if callable(configure_model):  # layers built there (see Trainer) must exist to load into
            configure_model()
        on_load = getattr(module, "on_load_checkpoint", None)
        if callable(on_load) and "checkpoint" in inspect.signature(on_load).parameters:
            on_load(checkpoint=checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=strict)
        if map_location is not None:
            module.to(map_location)
        return module.eval()


def _read_checkpoint(path: Union[str, Path], map_location: Any, safe_globals: Optional[List[Any]]) -> Dict[str, Any]:
    """A checkpoint file through fulmen's safe reader, or a directory through the installed
    plugin that recognises its format."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    reader = TorchCheckpointIO(safe_globals=safe_globals)
    if Path(path).is_dir():
        from fulmen.plugins import manager

        # On CPU; load_from_checkpoint moves the module to map_location after loading.
        checkpoint = manager.build().manager.hook.read_checkpoint_directory(path=str(path))
        if checkpoint is not None:
            return checkpoint
    return reader.load_checkpoint(path, map_location=map_location)


Module._fulmen_hook_base = Module
Module._fulmen_direct_methods = frozenset({"setup", "teardown"})
