"""A model, a callback and a report reader shared by the profiler tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from helpers import BoringModule

import fulmen

STEP = "[Strategy]SingleDeviceStrategy.training_step"
VAL_STEP = "[Strategy]SingleDeviceStrategy.validation_step"
FETCH = "[_TrainingEpochLoop].train_dataloader_next"
CALLBACK_HOOK = "[Callback]BatchCounter.on_train_batch_end"
MODULE_HOOK = "[LightningModule]ProfiledModule.on_train_epoch_start"


class BatchCounter(fulmen.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer):
        self.batches += 1


class ProfiledModule(BoringModule):
    """Times part of its own step the way Lightning users do."""

    def training_step(self, batch, batch_idx):
        with self.trainer.profiler.profile("custom"):
            return super().training_step(batch, batch_idx)

    def on_train_epoch_start(self):
        pass


def simple_rows(report: str) -> Dict[str, Dict[str, str]]:
    """SimpleProfiler's extended table as {action: {column: cell}}."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def read(path: Path) -> str:
    assert path.is_file(), f"no report at {path}; the directory holds {sorted(p.name for p in path.parent.iterdir())}"
    return path.read_text()
