"""``EMAWeightAveraging``: an exponential moving average of the weights (Lightning 2.6's
callback of that name, same arguments and timing, plus ``use_ema_for_validation`` and
``warmup``).

Timing (Lightning's): after an optimizer step with index ``step_idx = global_step - 1``,
the average is updated when :meth:`EMAWeightAveraging.should_update` says so (by default
every ``update_every_n_steps`` from ``update_starting_at_step``), and at an epoch's end from
``update_starting_at_epoch`` when given. The first update copies the weights; each later one
is ``average = decay * average + (1 - decay) * weights``, one ``torch._foreach_lerp_`` over
all tensors. Batches that do not step (accumulation) cost one integer comparison.

Where the average is used: swapped into the module for each validation run inside ``fit``
(``use_ema_for_validation``; copied in, and the training weights copied back afterwards,
bit for bit), and left in the module when training ends. A checkpoint's ``state_dict`` holds
the *averaged* weights, so ``load_from_checkpoint``, ``validate(ckpt_path=...)`` and the best
checkpoint by a validation metric all give the weights that were measured; the training
weights go under ``"current_model_state"`` (Lightning's key) and come back on resume, with the
update counters in the callback's own state: a resumed run continues bit-identically.

What is averaged: the parameters that require gradients, and the floating buffers. Frozen
parameters do not change, so their average is themselves; copying them would double the
memory of a LoRA run for nothing (the frozen base is nearly the whole model). When the
trainable set grows (``BackboneFinetuning`` unfreezes a backbone), the new parameters join
the average with their current value, checked at the first update of each epoch (where
finetuning callbacks unfreeze) so that a step pays one flag test. A parameter once averaged
stays averaged, also if it is frozen again. The checkpoint's ``state_dict`` holds the
average of the averaged tensors and the others as they are.

Where it differs from Lightning's, and why: validation outside ``fit`` (``trainer.validate``)
is left alone — after fit the module already holds the average, and with ``ckpt_path`` the
checkpoint's own (averaged) weights are what should be measured, not an average from an
earlier fit still in memory; integer buffers (``num_batches_tracked``) are never averaged
(an average of a counter is no counter); a weights-only checkpoint gets the average without
a copy of the training weights, since it cannot resume anyway. Lightning's generic
``WeightAveraging`` base has no fulmen counterpart (``StochasticWeightAveraging`` covers SWA).

Distributed: with replicated parameters (DDP) each process keeps its own average of
identical weights, so the averages agree without communication. Sharded parameters (FSDP's
``DTensor`` shards, or parameters a strategy partitioned away to nothing) are refused: one
rank's average of its shards is not a model a checkpoint could hold.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenCheckpointError, FulmenConfigError

CURRENT_MODEL_STATE = "current_model_state"


class EMAWeightAveraging(Callback):
    """Keep an exponential moving average of the module's weights; validate and save with it.

    Args:
        device: where the average lives (``None``: beside each weight). ``"cpu"`` saves
            accelerator memory at the price of a copy per update.
        use_buffers: average floating-point buffers too (batch-norm statistics); integer
            buffers (counters) are never averaged. ``False``: buffers are left alone.
        decay: the weight of the old average in each update, in [0, 1).
        update_every_n_steps: update after every n-th optimizer step.
        update_starting_at_step: no step updates before this step index.
        update_starting_at_epoch: also update at the end of each epoch from this one on.
        use_ema_for_validation: validation inside ``fit`` runs on the averaged weights (and
            ``ModelCheckpoint``/``EarlyStopping`` see their metrics); ``False`` validates the
            training weights.
        warmup: the ``k``-th update uses ``min(decay, (1 + k) / (10 + k))`` instead of
            ``decay``, so the average forgets the early, poor weights quickly (the schedule of
            TensorFlow's ``ExponentialMovingAverage(num_updates=...)``).
    """

    def __init__(
        self,
        device: Optional[Union[torch.device, str, int]] = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: Optional[int] = None,
        update_starting_at_epoch: Optional[int] = None,
        use_ema_for_validation: bool = True,
        warmup: bool = False,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise FulmenConfigError(
                f"EMAWeightAveraging(decay={decay!r}) must be a number in [0, 1): the old average's weight "
                "per update (0.999 is usual; 1 would never change it)"
            )
        for name, value in (("update_every_n_steps", update_every_n_steps),):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FulmenConfigError(f"EMAWeightAveraging({name}={value!r}) must be an int >= 1")
        for name, value in (("update_starting_at_step", update_starting_at_step),
                            ("update_starting_at_epoch", update_starting_at_epoch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise FulmenConfigError(f"EMAWeightAveraging({name}={value!r}) must be None or an int >= 0")
        self._device = torch.device(device) if isinstance(device, (str, int)) else device
        self._use_buffers = bool(use_buffers)
        self.decay = float(decay)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch
        self.use_ema_for_validation = bool(use_ema_for_validation)
        self.warmup = bool(warmup)
        # The averaged tensors, index-aligned with _names/_live (the module's trainable
        # parameters, then its floating buffers when use_buffers).
        self._names: List[str] = []
        self._module: Optional[nn.Module] = None
        self._check_trainable = False  # set at each epoch start: look for unfrozen parameters
        self._resumed_names: List[str] = []  # what the checkpoint being resumed had averaged
        self._live: List[torch.Tensor] = []
        self._average: List[torch.Tensor] = []
        self._backup: Optional[List[torch.Tensor]] = None  # training weights while swapped out
        self._num_updates = 0
        self._latest_update_step = 0  # global_step of the last step update (0: none yet)
        self._latest_update_epoch = -1
        self._pending: Optional[Dict[str, torch.Tensor]] = None  # averages read from a checkpoint

    # ------------------------------------------------------------------ Lightning's override point
    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """Whether to update after optimizer step ``step_idx`` (from 0) or at the end of epoch
        ``epoch_idx``; one of the two is given. Override for another schedule."""
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            if started and step_idx % self.update_every_n_steps == 0:
                return True
        if epoch_idx is not None:
            return self.update_starting_at_epoch is not None and epoch_idx >= self.update_starting_at_epoch
        return False

    # ------------------------------------------------------------------ read-outs
    @property
    def num_updates(self) -> int:
        """How many updates the average has had (0: it still equals the starting weights)."""
        return self._num_updates

    def averaged_state_dict(self) -> Dict[str, torch.Tensor]:
        """The averaged tensors by the module's parameter/buffer names (the live tensors, not copies)."""
        return dict(zip(self._names, self._average))

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, module, stage) -> None:
        """Forget a previous fit's average; the new one is built at ``on_fit_start``, once the
        strategy has placed (and possibly wrapped) the module."""
        if stage == "fit":
            self._names, self._average = [], []  # built once the strategy has placed the module

    def on_load_checkpoint(self, trainer, module, checkpoint) -> None:
        """Resuming fit: the checkpoint's ``state_dict`` is the average; the module must get the
        training weights, so they are put in its place before the Trainer loads it. Outside
        fit nothing changes: evaluating a checkpoint evaluates its averaged weights."""
        if trainer.stage != "fit" or CURRENT_MODEL_STATE not in checkpoint:
            return
        self._pending = checkpoint["state_dict"]
        checkpoint["state_dict"] = checkpoint[CURRENT_MODEL_STATE]

    def on_fit_start(self, trainer, module) -> None:
        """Start the average from the module's weights (or a resumed checkpoint's average);
        refuse sharded parameters."""
        _refuse_sharded(module, type(trainer.strategy).__name__)
        self._build(module)
        if self._pending is not None:
            self._load_average(self._pending)
            self._pending = None

    def on_train_epoch_start(self) -> None:
        """Finetuning callbacks unfreeze here (in any order with this one): look for newly
        trainable parameters at the next update."""
        self._check_trainable = True

    def on_train_batch_end(self, trainer) -> None:
        """Update after an optimizer step that :meth:`should_update` picks; a batch that did
        not step (gradient accumulation) changes nothing."""
        step = trainer.global_step
        if step > self._latest_update_step and self.should_update(step_idx=step - 1):
            self._update()
            self._latest_update_step = step

    def on_train_epoch_end(self, trainer) -> None:
        """Update at the end of an epoch from ``update_starting_at_epoch`` on."""
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            self._update()
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer, module) -> None:
        """Training is over: the module keeps the averaged weights (Lightning's behaviour)."""
        if self._num_updates:
            self._restore_training_weights()
            _copy_each(self._live, self._average)

    def on_validation_epoch_start(self, trainer) -> None:
        """Inside fit, with ``use_ema_for_validation``: copy the average into the module,
        keeping the training weights aside (nothing to do before the first update)."""
        if trainer.stage == "fit" and self.use_ema_for_validation and self._num_updates and self._backup is None:
            self._backup = [t.detach().clone() for t in self._live]
            _copy_each(self._live, self._average)

    def on_validation_epoch_end(self) -> None:
        """Put the training weights back, bit for bit, before training goes on."""
        self._restore_training_weights()

    def on_exception(self) -> None:
        """A run that fails mid-validation leaves the module with its training weights."""
        self._restore_training_weights()

    def on_save_checkpoint(self, trainer, checkpoint) -> None:
        """Average into ``state_dict``, training weights into ``"current_model_state"``. A
        checkpoint written inside ``on_train_batch_end`` by a callback listed before this one
        first gets this step's update, so that the file and the run agree whatever the order."""
        if not self._average:
            return
        if trainer.stage == "fit" and trainer.training:
            self.on_train_batch_end(trainer)
            if "callbacks" in checkpoint:
                checkpoint["callbacks"][self.state_key] = self.state_dict()
        state = checkpoint["state_dict"]
        averaged = self.averaged_state_dict()
        if "loops" in checkpoint:  # a resumable checkpoint: keep the training weights too
            current = dict(state)
            if self._backup is not None:  # saved mid-validation: the module holds the average
                current.update({n: t for n, t in zip(self._names, self._backup) if n in current})
            checkpoint[CURRENT_MODEL_STATE] = current
        checkpoint["state_dict"] = {k: averaged.get(k, v) for k, v in state.items()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """The update counters and the names of the averaged tensors (the averaged weights
        are the checkpoint's ``state_dict``)."""
        return {
            "num_updates": self._num_updates,
            "latest_update_step": self._latest_update_step,
            "latest_update_epoch": self._latest_update_epoch,
            "averaged_names": list(self._names),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the counters, so ``should_update`` and the warmup continue where they were,
        and which tensors were averaged (a parameter unfrozen before the checkpoint may not be
        trainable yet when the average is rebuilt)."""
        self._num_updates = int(state["num_updates"])
        self._latest_update_step = int(state["latest_update_step"])
        self._latest_update_epoch = int(state.get("latest_update_epoch", -1))
        self._resumed_names = list(state.get("averaged_names", ()))

    # ------------------------------------------------------------------ the work
    def _build(self, module: nn.Module) -> None:
        keep = set(self._resumed_names)
        self._resumed_names = []
        tracked = [(n, p) for n, p in module.named_parameters() if p.requires_grad or n in keep]
        if self._use_buffers:
            tracked += [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]
        self._module = module
        self._names = [n for n, _ in tracked]
        self._live = [t for _, t in tracked]
        with torch.no_grad():
            self._average = [t.detach().to(self._device or t.device, copy=True) for t in self._live]
        self._backup = None
        self._check_trainable = False

    def _add_unfrozen(self) -> None:
        """Parameters that became trainable since the average was built join it with their
        current value (their average so far is that value: they have not changed)."""
        self._check_trainable = False
        known = set(self._names)
        joined = [(n, p) for n, p in self._module.named_parameters() if p.requires_grad and n not in known]
        with torch.no_grad():
            for name, param in joined:
                self._names.append(name)
                self._live.append(param)
                self._average.append(param.detach().to(self._device or param.device, copy=True))

    def _update(self) -> None:
        if self._check_trainable and self._module is not None:
            self._add_unfrozen()
        with torch.no_grad():
            live = self._live if self._device is None else [t.to(self._device) for t in self._live]
            if self._num_updates == 0:
                torch._foreach_copy_(self._average, live)
            else:
                decay = self.decay
                if self.warmup:
                    decay = min(decay, (1 + self._num_updates) / (10 + self._num_updates))
                torch._foreach_lerp_(self._average, live, 1.0 - decay)
        self._num_updates += 1

    def _restore_training_weights(self) -> None:
        if self._backup is not None:
            _copy_each(self._live, self._backup)
            self._backup = None

    def _load_average(self, state: Dict[str, torch.Tensor]) -> None:
        missing = [n for n in self._names if n not in state]
        if missing:
            raise FulmenCheckpointError(
                f"EMAWeightAveraging: the checkpoint's averaged weights lack {missing[:3]} "
                f"({len(missing)} in all); resume with the model the checkpoint was written with"
            )
        _copy_each(self._average, [state[n] for n in self._names])


def _copy_each(destinations: List[torch.Tensor], sources: List[torch.Tensor]) -> None:
    """Copy tensor by tensor: exact, and the two lists may live on different devices."""
    with torch.no_grad():
        for destination, source in zip(destinations, sources):
            destination.copy_(source)


def _refuse_sharded(module: nn.Module, strategy: str) -> None:
    from fulmen.callbacks.swa import _is_sharded

    if _is_sharded(module) or any(p.numel() == 0 for p in module.parameters()):
        raise FulmenConfigError(
            f"EMAWeightAveraging needs whole parameters on each process, but {strategy} shards them "
            "(each rank would average only its own pieces); use a strategy that replicates the "
            "parameters (single_device, ddp), or drop the callback"
        )
