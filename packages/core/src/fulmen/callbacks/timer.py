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
    """Measure the time spent training, validating and testing, and stop fitting after
    ``duration`` (what ``Trainer(max_time=...)`` adds).

    Training time survives a resume: the checkpoint keeps what was spent, so a job that is
    preempted and requeued still stops at the total it was given.

    Args:
        duration: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict such as ``{"hours": 2}``;
            ``None`` only measures.
        interval: Check the limit after every training batch (``"step"``) or epoch (``"epoch"``).
        verbose: Print a line when the limit stops training."""

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
        """When ``stage`` (``"train"``, ``"validate"``, ``"test"``) last started, in
        ``time.monotonic`` seconds, or ``None`` before it did."""
        return self._start[stage]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` so far (to its end, if it ended); for ``"train"`` this
        includes the time of the runs this one resumed from."""
        start, end = self._start[stage], self._end[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return offset + ((end if end is not None else time.monotonic()) - start)

    def time_remaining(self, stage: str = "train") -> Optional[float]:
        """Seconds of ``duration`` left for training, or ``None`` without a duration."""
        if self.duration is None:
            return None
        return self.duration.total_seconds() - self.time_elapsed(stage)

    def on_train_start(self) -> None:
        """Start the training clock."""
        self._start["train"], self._end["train"] = time.monotonic(), None

    def on_train_end(self) -> None:
        """Stop the training clock."""
        self._end["train"] = time.monotonic()

    def on_validation_start(self) -> None:
        """Start the validation clock."""
        self._start["validate"], self._end["validate"] = time.monotonic(), None

    def on_validation_end(self) -> None:
        """Stop the validation clock."""
        self._end["validate"] = time.monotonic()

    def on_test_start(self) -> None:
        """Start the test clock."""
        self._start["test"], self._end["test"] = time.monotonic(), None

    def on_test_end(self) -> None:
        """Stop the test clock."""
        self._end["test"] = time.monotonic()

    def on_train_batch_end(self, trainer) -> None:
        """Check the limit after each training batch (``interval="step"``)."""
        if self.interval == "step":
            self._check(trainer)

    def on_train_epoch_end(self, trainer) -> None:
        """Check the limit after each training epoch (``interval="epoch"``)."""
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
        """The training time spent so far, carried into a resumed run."""
        return {"time_elapsed": {"train": self.time_elapsed("train")}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Count the resumed run's training time on top of what the checkpoint recorded."""
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))
