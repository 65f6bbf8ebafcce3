"""``StochasticWeightAveraging``: average the weights of the last epochs (Lightning's callback,
on ``torch.optim.swa_utils``).

When the averaging runs (Lightning's timing, kept so that ported runs give the same weights):
the module's weights are added to the average at the *start* of every epoch from
``swa_epoch_start`` to the last one, so the average holds the weights after epochs
``swa_start - 1`` .. ``max_epochs - 2``; the last epoch still trains (under the SWA learning
rate) but, as in Lightning, its result is replaced by the average when training ends.

Batch norm: after the weights are replaced, their running statistics belong to no model that
exists, so they are recomputed with one pass of ``training_step`` over the training data
without gradients (``momentum=None``: an exact average over the batches). Lightning does this
pass as an extra epoch that the loop counts; fulmen does it inside ``on_train_end``, so the
epoch count, loggers and checkpoints do not see a phantom epoch.

Exact resume: the averaged parameters and ``n_averaged`` are in the checkpoint (this
callback's state), and a run resumed inside the SWA epochs puts the ``SWALR`` scheduler back
in the Trainer's scheduler list before the schedulers' states are loaded.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torch.optim.swa_utils import SWALR

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError, FulmenWarning

_AvgFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _Parameters(nn.Module):
    """A module's parameters and nothing else: what ``AveragedModel`` copies and averages.
    Copying the user's module itself would copy its Trainer reference (and the Trainer)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.values = nn.ParameterList(list(module.parameters()))


def _is_sharded(module: nn.Module) -> bool:
    """Whether parameters are split across processes (FSDP2 and tensor parallelism hold
    ``DTensor`` shards): an average of one rank's shards is not the model's average."""
    if not torch.distributed.is_available():
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - every supported torch has it
        return False
    return any(isinstance(p, DTensor) for p in module.parameters())


class StochasticWeightAveraging(Callback):
    """Stochastic Weight Averaging (Izmailov et al., 2018): from ``swa_epoch_start`` on, the
    learning rate anneals to ``swa_lrs`` and the weights are averaged once per epoch; when fit
    ends the module gets the averaged weights (and fresh batch-norm statistics).

    Args:
        swa_lrs: the SWA learning rate, one float for every parameter group or a list with one
            per group.
        swa_epoch_start: an int: the epoch (counted from 1) at which averaging starts; a float in
            [0, 1]: that fraction of ``max_epochs``.
        annealing_epochs: epochs over which the learning rate moves to ``swa_lrs`` (0: at once).
        annealing_strategy: ``"cos"`` or ``"linear"``.
        avg_fn: ``(averaged, current, n_averaged) -> new averaged``; an equal-weight average by
            default.
        device: where the averaged copy lives (``None``: the module's device).
    """

    def __init__(
        self,
        swa_lrs: Union[float, List[float]],
        swa_epoch_start: Union[int, float] = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: str = "cos",
        avg_fn: Optional[_AvgFn] = None,
        device: Optional[Union[torch.device, str]] = torch.device("cpu"),
    ) -> None:
        start_ok = (isinstance(swa_epoch_start, int) and not isinstance(swa_epoch_start, bool) and swa_epoch_start >= 1) or (
            isinstance(swa_epoch_start, float) and 0 <= swa_epoch_start <= 1
        )
        if not start_ok:
            raise FulmenConfigError(
                f"StochasticWeightAveraging(swa_epoch_start={swa_epoch_start!r}) must be an int >= 1 "
                "(an epoch counted from 1) or a float between 0 and 1 (a fraction of max_epochs)"
            )
        lrs = swa_lrs if isinstance(swa_lrs, list) else [swa_lrs]
        if not isinstance(swa_lrs, (float, list)) or not lrs or not all(isinstance(lr, float) and lr > 0 for lr in lrs):
            raise FulmenConfigError(
                f"StochasticWeightAveraging(swa_lrs={swa_lrs!r}) must be a positive float or a list of "
                "positive floats (one per parameter group)"
            )
        if not isinstance(annealing_epochs, int) or annealing_epochs < 0:
            raise FulmenConfigError(f"StochasticWeightAveraging(annealing_epochs={annealing_epochs!r}) must be an int >= 0")
        if annealing_strategy not in ("cos", "linear"):
            raise FulmenConfigError(
                f"StochasticWeightAveraging(annealing_strategy={annealing_strategy!r}) must be 'cos' or 'linear'"
            )
        if avg_fn is not None and not callable(avg_fn):
            raise FulmenConfigError("StochasticWeightAveraging(avg_fn=...) must be a function (averaged, current, n) -> averaged")
        if device is not None and not isinstance(device, (torch.device, str)):
            raise FulmenConfigError(f"StochasticWeightAveraging(device={device!r}) must be a torch.device, a string or None")
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn
        self._device = device
        self._average: Optional[Any] = None  # torch.optim.swa_utils.AveragedModel over _Parameters
        self._swa_scheduler: Optional[Any] = None
        self._latest_update_epoch = -1
        self._max_epochs: Optional[int] = None
        self._model_contains_batch_norm = False

    # ------------------------------------------------------------------ Lightning's read-outs
    @property
    def swa_start(self) -> int:
        """The first averaged epoch, counted from 0."""
        start = self._swa_epoch_start
        if isinstance(start, float):
            start = int(self._max_epochs * start)
        return max(start - 1, 0)

    @property
    def swa_end(self) -> int:
        """The last averaged epoch, counted from 0: the last epoch of training."""
        return self._max_epochs - 1

    @property
    def n_averaged(self) -> Optional[torch.Tensor]:
        """How many weight snapshots the average holds (None before fit)."""
        return None if self._average is None else self._average.n_averaged

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: nn.Module) -> bool:
        """Whether batch-norm statistics must be recomputed for the averaged weights
        (Lightning's name, kept for subclasses that override it)."""
        return any(isinstance(m, _BatchNorm) for m in pl_module.modules())

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, module, stage) -> None:
        """Create the averaged copy, before a resumed checkpoint's state is loaded into it."""
        if stage != "fit":
            return
        from torch.optim.swa_utils import AveragedModel

        device = self._device if self._device is not None else module.device
        self._average = AveragedModel(_Parameters(module), device=device, avg_fn=self._avg_fn)
        self._swa_scheduler = None
        self._latest_update_epoch = -1

    def on_fit_start(self, trainer, module) -> None:
        """Refuse what SWA cannot handle, now that the strategy has set the module up."""
        if len(trainer.optimizers) != 1:
            raise FulmenConfigError(
                f"StochasticWeightAveraging works with one optimizer; configure_optimizers returned {len(trainer.optimizers)}"
            )
        if len(trainer.lr_scheduler_configs) > 1:
            raise FulmenConfigError(
                "StochasticWeightAveraging replaces the LR scheduler with SWALR and supports at most one; "
                f"configure_optimizers returned {len(trainer.lr_scheduler_configs)}"
            )
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise FulmenConfigError(
                "StochasticWeightAveraging counts epochs up to max_epochs; set Trainer(max_epochs=...)"
            )
        if _is_sharded(module):
            raise FulmenConfigError(
                f"StochasticWeightAveraging does not support sharded parameters ({type(trainer.strategy).__name__}); "
                "use a strategy that keeps whole parameters on each process (ddp, single_device)"
            )
        self._max_epochs = trainer.max_epochs
        self._model_contains_batch_norm = self.pl_module_contains_batch_norm(module)

    def on_train_epoch_start(self, trainer, module) -> None:
        """Average at the start of each epoch in the window, so the epoch just finished counts
        (Lightning's timing), and switch to the SWA learning rate when the window opens."""
        epoch = trainer.current_epoch
        if not self.swa_start <= epoch <= self.swa_end:
            return
        if self._swa_scheduler is None:
            self._install_scheduler(trainer)
        if epoch > self._latest_update_epoch:  # a mid-epoch resume fires this hook again
            self._average.update_parameters(_Parameters(module))
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer, module) -> None:
        """All SWA epochs done: the module takes the average; batch norms are recomputed."""
        if self._latest_update_epoch != self.swa_end or trainer.current_epoch != self.swa_end + 1:
            return  # stopped early (max_steps, a stop signal): keep the trained weights, as Lightning does
        self.transfer_weights(self._average.module, module)
        if self._model_contains_batch_norm:
            self._recompute_batch_norm(trainer, module)

    # ------------------------------------------------------------------ the work
    def _install_scheduler(self, trainer) -> None:
        """Swap the Trainer's LR scheduler (if any) for SWALR, an epoch-interval scheduler."""
        from fulmen.trainer.optim import SchedulerConfig

        optimizer = trainer.optimizers[0].optimizer
        groups = len(optimizer.param_groups)
        lrs = self._swa_lrs if isinstance(self._swa_lrs, list) else [self._swa_lrs] * groups
        if len(lrs) != groups:
            raise FulmenConfigError(
                f"StochasticWeightAveraging(swa_lrs=...) has {len(lrs)} learning rates but the optimizer has "
                f"{groups} parameter groups; give one per group or a single float"
            )
        self._swa_scheduler = _PlainStateSWALR(
            optimizer, swa_lr=lrs, anneal_epochs=self._annealing_epochs, anneal_strategy=self._annealing_strategy
        )
        config = SchedulerConfig(self._swa_scheduler)
        configs = trainer.lr_scheduler_configs
        if configs:
            if configs[0].interval != "epoch" or configs[0].frequency != 1:
                warnings.warn(
                    f"StochasticWeightAveraging replaces {type(configs[0].scheduler).__name__} (interval="
                    f"{configs[0].interval!r}, frequency={configs[0].frequency}) with SWALR, which steps every epoch",
                    FulmenWarning,
                    stacklevel=2,
                )
            configs[0] = config
        else:
            configs.append(config)

    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        """Copy parameters from ``src`` into ``dst`` in order (devices may differ)."""
        for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
            dst.detach().copy_(src.to(dst.device))

    def _recompute_batch_norm(self, trainer, module: nn.Module) -> None:
        """One pass of ``training_step`` over the training data, without gradients, with each
        batch norm's statistics reset and ``momentum=None`` (an exact average, as
        ``torch.optim.swa_utils.update_bn`` does). ``training_step`` rather than ``forward``:
        it is the one method known to take the loader's batches. What it logs is discarded."""
        norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
        momenta = {}
        for norm in norms:
            norm.reset_running_stats()
            momenta[norm] = norm.momentum
            norm.momentum = None
        strategy = trainer.strategy
        limit = trainer.num_training_batches
        metrics = trainer.callback_metrics
        saved = dict(metrics)
        was_training = module.training
        module.train()
        try:
            with torch.no_grad(), strategy.forward_context():
                for index, batch in enumerate(trainer.train_dataloader):
                    if index >= limit:
                        break
                    module.training_step(strategy.batch_to_device(batch), index)
        finally:
            for norm, momentum in momenta.items():
                norm.momentum = momentum
            module.train(was_training)
            metrics.clear()
            metrics.update(saved)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {
            "n_averaged": 0 if self._average is None else int(self._average.n_averaged),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_installed": self._swa_scheduler is not None,
            "average_model_state": None if self._average is None else self._average.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._latest_update_epoch = int(state["latest_update_epoch"])
        if self._average is not None and state.get("average_model_state") is not None:
            self._average.load_state_dict(state["average_model_state"])

    def on_load_checkpoint(self, trainer, module, checkpoint) -> None:
        """Inside the SWA epochs, SWALR was in the scheduler list when the checkpoint was
        written: put it back now, before the schedulers' saved states are loaded in order."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or trainer.stage != "fit" or "loops" not in checkpoint:
            return
        if state.get("scheduler_installed") and self._swa_scheduler is None:
            self._install_scheduler(trainer)


class _PlainStateSWALR(SWALR):
    """SWALR whose state is plain data. On torch < 2.10 its state includes ``anneal_func``, a
    bound method, which fulmen's ``weights_only`` checkpoint loading rightly refuses; the
    constructor rebuilds it from ``anneal_strategy``, so it need not be saved."""

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state.pop("anneal_func", None)
        return state
