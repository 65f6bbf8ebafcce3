"""``trainer.state`` as Lightning programs read it: ``.fn``, ``.stage``, ``.status``,
``.finished``, with Lightning's values (``lightning.pytorch.trainer.states``).

fulmen keeps the state as one word (``"fitting"``, ``"validating"``, ``"finished"``, ...)
that its loops and callbacks compare with, so :class:`TrainerState` *is* that string, and the
Lightning fields are read from it and from the Trainer when asked: nothing is kept in step
with the loops, and nothing extra happens per step.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional


class TrainerFn(str, Enum):
    """Which entry point runs (or last ran): ``trainer.state.fn``."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):
    """Which loop runs now: ``trainer.state.stage`` (``None`` outside a run)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class TrainerStatus(str, Enum):
    """``trainer.state.status``; fulmen's ``"failed"`` (an exception) counts as interrupted."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


_RUNNING = {"fitting", "validating", "testing", "predicting"}
_EVALUATION_STAGE = {"validating": RunningStage.VALIDATING, "testing": RunningStage.TESTING,
                     "predicting": RunningStage.PREDICTING}


class TrainerState(str):
    """fulmen's state word (``trainer.state == "fitting"`` holds) with Lightning's fields."""

    def __new__(cls, name: str, trainer: Any) -> "TrainerState":
        state = super().__new__(cls, name)
        state._trainer = trainer
        return state

    @property
    def fn(self) -> Optional[TrainerFn]:
        """The entry point running or last run (``None`` before the first)."""
        stage = getattr(self._trainer, "stage", None)
        return TrainerFn(stage) if stage is not None else None

    @property
    def status(self) -> TrainerStatus:
        """Initializing, running, finished or interrupted."""
        if self in _RUNNING:
            return TrainerStatus.RUNNING
        if self in ("interrupted", "failed"):
            return TrainerStatus.INTERRUPTED
        if self == "finished":
            return TrainerStatus.FINISHED
        return TrainerStatus.INITIALIZING

    @property
    def stage(self) -> Optional[RunningStage]:
        """The loop running now: in fit, training, the sanity check or validation."""
        if self == "fitting":
            trainer = self._trainer
            if trainer.sanity_checking:
                return RunningStage.SANITY_CHECKING
            return RunningStage.VALIDATING if trainer._evaluating else RunningStage.TRAINING
        return _EVALUATION_STAGE.get(str(self))

    @property
    def finished(self) -> bool:
        """True once the last run ended normally."""
        return self == "finished"
