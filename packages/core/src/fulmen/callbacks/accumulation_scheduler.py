"""``GradientAccumulationScheduler``: change ``accumulate_grad_batches`` by epoch (Lightning's).

The fit loop reads ``trainer.accumulate_grad_batches`` when an epoch's batches begin, right
after ``on_train_epoch_start``, so setting it in that hook governs the whole epoch. A run
resumed mid-epoch fires ``on_train_epoch_start`` again and so gets the epoch's value back.
"""

from __future__ import annotations

from typing import Dict

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError


class GradientAccumulationScheduler(Callback):
    """Accumulate gradients over a number of batches that changes with the epoch.

    Args:
        scheduling: ``{first_epoch: accumulate_grad_batches}``, epochs counted from 0. Each
            value holds from its epoch until the next key; epochs before the smallest key
            accumulate 1 (Lightning adds ``0: 1`` to the dict you pass, and so does this).

    Example: ``GradientAccumulationScheduler({0: 8, 4: 4, 8: 1})`` steps every 8 batches in
    epochs 0-3, every 4 in epochs 4-7 and every batch from epoch 8 on.

    It refuses to run with ``Trainer(accumulate_grad_batches=...)`` other than 1 (two
    settings for one thing), under manual optimization (which accumulates by hand), and
    with a strategy that fixes the accumulation when it sets up (a class attribute
    ``supports_accumulation_schedule = False``; engines that bake it into their config).
    """

    def __init__(self, scheduling: Dict[int, int]) -> None:
        if not isinstance(scheduling, dict) or not scheduling:
            raise FulmenConfigError(
                f"GradientAccumulationScheduler(scheduling={scheduling!r}) needs a non-empty dict "
                "{first_epoch: accumulate_grad_batches}, e.g. {0: 8, 4: 1}"
            )
        bad_epochs = [k for k in scheduling if not isinstance(k, int) or isinstance(k, bool) or k < 0]
        if bad_epochs:
            raise FulmenConfigError(
                f"GradientAccumulationScheduler: epochs must be integers >= 0 (counted from 0); got {bad_epochs}"
            )
        bad_factors = [v for v in scheduling.values() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if bad_factors:
            raise FulmenConfigError(
                f"GradientAccumulationScheduler: accumulation factors must be integers >= 1; got {bad_factors}"
            )
        if min(scheduling) != 0:
            scheduling.update({0: 1})  # in place, as Lightning does: the caller's dict shows it
        self.scheduling = scheduling
        self.epochs = sorted(scheduling)
        self._configured = None  # the Trainer's own value while a fit runs

    def going_to_accumulate_grad_batches(self) -> bool:
        """Whether any epoch accumulates more than one batch."""
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor for ``epoch``: the value of the last key at or before it."""
        factor = 1
        for first in self.epochs:
            if first > epoch:
                break
            factor = self.scheduling[first]
        return factor

    def on_train_start(self, trainer, module) -> None:
        """Refuse the combinations that cannot follow a schedule, before anything trains."""
        self._configured = trainer.accumulate_grad_batches
        if not module.automatic_optimization:
            raise FulmenConfigError(
                "GradientAccumulationScheduler changes automatic optimization's accumulation; under manual "
                "optimization (automatic_optimization = False) accumulate in training_step, or remove the callback"
            )
        if not getattr(trainer.strategy, "supports_accumulation_schedule", True):
            raise FulmenConfigError(
                f"{type(trainer.strategy).__name__} fixes accumulate_grad_batches when it sets up and cannot "
                "change it between epochs; remove GradientAccumulationScheduler and set "
                "Trainer(accumulate_grad_batches=...) instead, or use another strategy"
            )
        if trainer.accumulate_grad_batches != 1:
            raise FulmenConfigError(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) and "
                "GradientAccumulationScheduler both set the accumulation; remove one of them"
            )

    def on_train_epoch_start(self, trainer) -> None:
        """Set the epoch's accumulation before its first batch: the fit loop reads it after this hook."""
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def teardown(self, trainer, stage) -> None:
        """Give the Trainer its own setting back, so a later fit starts from it (and the
        ``accumulate_grad_batches != 1`` check above does not trip on our value)."""
        if stage == "fit" and self._configured is not None:
            trainer.accumulate_grad_batches = self._configured
            self._configured = None
