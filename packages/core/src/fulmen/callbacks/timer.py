"""``Timer``: measure time per stage and stop training after a duration (``max_time``)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Dict, Optional, Union

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError


def parse_duration(duration: Union[str, timedelta, Dict[str, int], None]) -> Optional[timedelta]:
    """``"DD:HH:MM:SS"``, a ``timedelta`` or ``{"hours": 1}`` → a ``timedelta``."""
    if duration is None or isinstance(duration, timedelta):
        return duration
    if isinstance(duration, dict):
        return timedelta(**duration)
    if isinstance(duration, str):
        parts = duration.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            days, hours, minutes, seconds = (int(p) for p in parts)
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise FulmenConfigError(
        f"duration {duration!r} is not understood; use 'DD:HH:MM:SS', a datetime.timedelta or a "
        "dict such as {'hours': 2}"
    )


class Timer(Callback):
    def __init__(self, duration: Union[str, timedelta, Dict[str, int], None] = None, interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise FulmenConfigError(f"Timer(interval={interval!r}) must be 'step' or 'epoch'")
        self.duration = parse_duration(duration)
        self.interval = interval
        self.verbose = verbose
        self._start: Dict[str, Optional[float]] = {"train": None, "validate": None, "test": None}
        self._end: Dict[str, Optional[float]] = {"train": None, "validate": None, "test": None}
        self._offset = 0.0  # training time spent before a resume

    def start_time(self, stage: str = "train") -> Optional[float]:
        return self._start[stage]

    def time_elapsed(self, stage: str = "train") -> float:
        start, end = self._start[stage], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + ((end if end is not None else time.monotonic()) - start)

    def time_remaining(self, stage: str = "train") -> Optional[float]:
        if self.duration is None:
            return None
        return self.duration.total_seconds() - self.time_elapsed(stage)

    def on_train_start(self) -> None:
        self._start["train"], self._end["train"] = time.monotonic(), None

    def on_train_end(self) -> None:
        self._end["train"] = time.monotonic()

    def on_validation_start(self) -> None:
        self._start["validate"], self._end["validate"] = time.monotonic(), None

    def on_validation_end(self) -> None:
        self._end["validate"] = time.monotonic()

    def on_test_start(self) -> None:
        self._start["test"], self._end["test"] = time.monotonic(), None

    def on_test_end(self) -> None:
        self._end["test"] = time.monotonic()

    def on_train_batch_end(self, trainer) -> None:
        if self.interval == "step":
            self._check(trainer)

    def on_train_epoch_end(self, trainer) -> None:
        if self.interval == "epoch":
            self._check(trainer)

    def _check(self, trainer) -> None:
        if self.duration is None or trainer.should_stop:
            return
        if self.time_elapsed("train") >= self.duration.total_seconds():
            trainer.should_stop = True
            if self.verbose:
                trainer.print(f"Timer: time limit of {self.duration} reached; stopping")

    def state_dict(self) -> Dict[str, Any]:
        return {"time_elapsed": {"train": self.time_elapsed("train")}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))
