"""The four stages a Trainer runs, and what differs between them, in one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Stage:
    #: ``trainer.state`` while the stage runs.
    state: str
    #: The module's step method (``None``: fit, which has its own loop).
    step_name: Optional[str]
    #: The dataloader kind: ``<kind>_dataloader()`` on a module or datamodule.
    loader_kind: str
    #: The Trainer attribute limiting its batches.
    limit_attribute: str


STAGES: Dict[str, Stage] = {
    "fit": Stage("fitting", "training_step", "train", "limit_train_batches"),
    "validate": Stage("validating", "validation_step", "val", "limit_val_batches"),
    "test": Stage("testing", "test_step", "test", "limit_test_batches"),
    "predict": Stage("predicting", "predict_step", "predict", "limit_predict_batches"),
}
