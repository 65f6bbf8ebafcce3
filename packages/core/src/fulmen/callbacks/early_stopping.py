"""``EarlyStopping``: stop when a monitored metric stops improving, diverges or goes NaN."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


class EarlyStopping(Callback):
    """Stop fitting when a logged metric stops improving, crosses a threshold or is no longer
    finite; the reason is printed and kept in ``stopping_reason``.

    The metric is checked after every validation run during fit, or at the end of each
    training epoch when the run has no validation. Stopping sets ``trainer.should_stop``; the
    loop ends once ``min_epochs``/``min_steps`` allow it.

    Args:
        monitor: The name passed to ``self.log`` (it must reach ``trainer.callback_metrics``).
        min_delta: How much better than the best so far counts as an improvement.
        patience: Checks in a row without improvement before stopping.
        verbose: Print when stopping (the reason is printed whenever it stops).
        mode: ``"min"`` when lower is better (a loss), ``"max"`` when higher is (an accuracy).
        strict: Raise when ``monitor`` was not logged; ``False`` skips the check instead.
        check_finite: Stop as soon as the metric is NaN or infinite.
        stopping_threshold: Stop once the metric is better than this (good enough).
        divergence_threshold: Stop once the metric is worse than this (beyond recovery).
        check_on_train_epoch_end: ``True`` checks at the end of each training epoch, ``False``
            after each validation; ``None`` chooses by whether validation runs."""

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: Optional[float] = None,
        divergence_threshold: Optional[float] = None,
        check_on_train_epoch_end: Optional[bool] = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise FulmenConfigError(f"EarlyStopping(mode={mode!r}) must be 'min' or 'max'")
        if patience < 0:
            raise FulmenConfigError(f"EarlyStopping(patience={patience}) must be >= 0")
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.stopping_reason: Optional[str] = None

    @property
    def state_key(self) -> str:
        """One key per monitored metric and mode, so two EarlyStopping callbacks keep separate
        state in a checkpoint."""
        return self._key_with(monitor=self.monitor, mode=self.mode)

    def _at_train_epoch_end(self, trainer) -> bool:
        if self.check_on_train_epoch_end is not None:
            return self.check_on_train_epoch_end
        return not getattr(trainer, "_has_validation", False)

    def on_train_epoch_end(self, trainer) -> None:
        """Check the metric here when checking at the end of training epochs."""
        if self._at_train_epoch_end(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer) -> None:
        """Check the metric after each validation run of fit (never in the sanity check)."""
        if trainer.sanity_checking or trainer.state != "fitting" or self._at_train_epoch_end(trainer):
            return
        self._check(trainer)

    def _improved(self, current: torch.Tensor) -> bool:
        if self.mode == "min":
            return bool(current < self.best_score - self.min_delta)
        return bool(current > self.best_score + self.min_delta)

    def _check(self, trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self.strict:
                return
            raise FulmenUserCodeError(
                f"EarlyStopping(monitor={self.monitor!r}) found no metric of that name. Logged "
                f"metrics: {sorted(trainer.callback_metrics) or 'none'}. Log it with "
                f"self.log({self.monitor!r}, ...), change monitor=, or pass strict=False"
            )
        current = value.detach().float().cpu() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        stop, reason = self._evaluate(current)
        if stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason = reason
            if self.verbose or reason:
                trainer.print(f"EarlyStopping: {reason}")

    def _evaluate(self, current: torch.Tensor):
        sign = "<" if self.mode == "min" else ">"
        if self.check_finite and not torch.isfinite(current):
            return True, f"{self.monitor} = {current.item()} is not finite; stopping (check_finite=True)"
        if self.stopping_threshold is not None and (
            current < self.stopping_threshold if self.mode == "min" else current > self.stopping_threshold
        ):
            return True, f"{self.monitor} = {current.item():.6g} reached stopping_threshold {sign} {self.stopping_threshold}"
        if self.divergence_threshold is not None and (
            current > self.divergence_threshold if self.mode == "min" else current < self.divergence_threshold
        ):
            return True, f"{self.monitor} = {current.item():.6g} crossed divergence_threshold {self.divergence_threshold}"
        if self._improved(current):
            self.best_score = current
            self.wait_count = 0
            return False, None
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (
                f"{self.monitor} did not improve by more than {self.min_delta} for {self.wait_count} "
                f"checks; best {self.best_score.item():.6g}"
            )
        return False, None

    def state_dict(self) -> Dict[str, Any]:
        """The patience counter and best score, so a resumed run keeps counting where it stopped."""
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": float(self.best_score),
            "patience": self.patience,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the patience counter and best score from a checkpoint."""
        self.wait_count = state["wait_count"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_score = torch.tensor(state["best_score"])
