"""A real short fulmen run for the report tests: CSV logger (the default), ModelCheckpoint
keeping the two best, LearningRateMonitor with a learning rate that falls every 4 steps."""

from __future__ import annotations

from pathlib import Path

import torch

import fulmen
from helpers import BoringModule, loader

# Distinctive values, to be found on the page.
HPARAMS = {"features": 8, "lr": 0.0375}


class ScheduledModule(BoringModule):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def short_run(root: Path):
    """Train 3 epochs of 8 steps; return the run directory and the checkpoint callback."""
    fulmen.seed_everything(0)
    checkpoint = fulmen.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=2)
    trainer = fulmen.Trainer(
        default_root_dir=root, accelerator="cpu", max_epochs=3, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[checkpoint, fulmen.callbacks.LearningRateMonitor(logging_interval="step")],
    )
    trainer.fit(ScheduledModule(**HPARAMS), loader(), loader())
    return Path(trainer.logger.log_dir), checkpoint
