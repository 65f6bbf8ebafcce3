"""``EarlyStopping``: stop when a monitored metric stops improving, diverges or goes NaN."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


class EarlyStopping(Callback):
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
        return self._key_with(monitor=self.monitor, mode=self.mode)

    def _at_train_epoch_end(self, trainer) -> bool:
        if self.check_on_train_epoch_end is not None:
            return self.check_on_train_epoch_end
        return not getattr(trainer, "_has_validation", False)

    def on_train_epoch_end(self, trainer) -> None:
        if self._at_train_epoch_end(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer) -> None:
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
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": float(self.best_score),
            "patience": self.patience,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.wait_count = state["wait_count"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_score = torch.tensor(state["best_score"])
