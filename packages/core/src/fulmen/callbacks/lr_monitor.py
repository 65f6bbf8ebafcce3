"""``LearningRateMonitor``: log each optimizer's learning rate (and momentum) as it changes."""

from __future__ import annotations

from typing import Dict, Optional

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError


class LearningRateMonitor(Callback):
    """Log every optimizer parameter group's learning rate (``lr-<Optimizer>`` names, Lightning's),
    and optionally momentum and weight decay, to the Trainer's loggers.

    Args:
        logging_interval: ``"step"`` (at logging steps), ``"epoch"``, or ``None`` to follow each
            scheduler's own interval (epoch when there is no scheduler).
        log_momentum: also log momentum (or Adam's first beta).
        log_weight_decay: also log weight decay.
    """
    def __init__(self, logging_interval: Optional[str] = None, log_momentum: bool = False, log_weight_decay: bool = False) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise FulmenConfigError(f"LearningRateMonitor(logging_interval={logging_interval!r}) must be None, 'step' or 'epoch'")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: Dict[str, list] = {}

    def on_train_start(self, trainer) -> None:
        """Check that there is a logger to write to, and name the parameter groups."""
        if not trainer.loggers:
            raise FulmenConfigError(
                "LearningRateMonitor needs a logger to write to; remove logger=False or drop the callback"
            )

    def _names(self, trainer):
        names = []
        scheduler_names = {c.opt_idx: c.name for c in trainer.lr_scheduler_configs if c.name}
        for index, optimizer in enumerate(trainer.optimizers):
            base = scheduler_names.get(index) or f"lr-{type(optimizer.optimizer).__name__}"
            if len(trainer.optimizers) > 1 and index not in scheduler_names:
                base = f"{base}-{index}"
            groups = optimizer.param_groups
            for group_index, group in enumerate(groups):
                suffix = f"/pg{group_index + 1}" if len(groups) > 1 else ""
                names.append((base + suffix, group))
        return names

    def _collect(self, trainer, interval: str) -> Dict[str, float]:
        stats: Dict[str, float] = {}
        for name, group in self._names(trainer):
            stats[name] = float(group["lr"])
            self.lrs.setdefault(name, []).append(stats[name])
            if self.log_momentum:
                momentum = group.get("momentum", group.get("betas", (None,))[0])
                if momentum is not None:
                    stats[f"{name}-momentum"] = float(momentum)  # Lightning's name; never collides with lr
            if self.log_weight_decay and "weight_decay" in group:
                stats[f"{name}-weight_decay"] = float(group["weight_decay"])
        return stats

    def _wanted(self, trainer, interval: str) -> bool:
        if self.logging_interval is not None:
            return self.logging_interval == interval
        configured = {c.interval for c in trainer.lr_scheduler_configs}
        return interval in configured if configured else interval == "epoch"

    def on_train_batch_start(self, trainer) -> None:
        """Log at logging steps when the interval is ``step``."""
        if self._wanted(trainer, "step") and trainer.global_step % trainer.log_every_n_steps == 0:
            trainer.log_metrics(self._collect(trainer, "step"))

    def on_train_epoch_start(self, trainer) -> None:
        """Log once per epoch when the interval is ``epoch``."""
        if self._wanted(trainer, "epoch"):
            trainer.log_metrics(self._collect(trainer, "epoch"))
