"""A regression trained with a gradient-accumulation schedule, stochastic weight averaging
for the last epochs and the simple profiler (Lightning 2.x).

Exercises: ``import lightning.pytorch as pl``, Trainer(profiler="simple") and
trainer.profiler.profile(...) in user code, GradientAccumulationScheduler,
StochasticWeightAveraging (which weights it averages, its SWA learning rate),
cli_lightning_logo, rank_zero_warn, a callback with on_train_epoch_start(trainer, pl_module).

Run: python profiler_and_schedulers.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import GradientAccumulationScheduler, StochasticWeightAveraging
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS, BATCHES, SWA_START, SWA_LR = 5, 8, 3, 0.02


def noisy_line(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class Regressor(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        with self.trainer.profiler.profile("forward_and_loss"):
            loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class EpochStartWeights(pl.Callback):
    """The model's weights as each training epoch begins."""

    def __init__(self):
        self.snapshots = []
        self.steps_at_start = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.snapshots.append([p.detach().clone() for p in pl_module.parameters()])
        self.steps_at_start.append(trainer.global_step)


def main(out):
    pl.cli_lightning_logo()
    pl.seed_everything(31)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_zero_warn("corpus: this warning is expected")
    assert any("corpus: this warning is expected" in str(w.message) for w in caught), [str(w.message) for w in caught]

    weights = EpochStartWeights()
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        limit_train_batches=BATCHES,
        accelerator="cpu",
        devices=1,
        profiler="simple",
        callbacks=[
            weights,
            GradientAccumulationScheduler(scheduling={0: 2, 2: 1}),
            StochasticWeightAveraging(swa_lrs=SWA_LR, swa_epoch_start=SWA_START, annealing_epochs=1),
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    model = Regressor()
    trainer.fit(model, DataLoader(noisy_line(), batch_size=16, shuffle=True))

    # accumulation of 2 for epochs 0-1, then every batch
    expected_starts = [0, BATCHES // 2, BATCHES, 2 * BATCHES, 3 * BATCHES]
    assert weights.steps_at_start == expected_starts, weights.steps_at_start
    assert trainer.global_step == 4 * BATCHES, trainer.global_step

    # swa_epoch_start counts epochs from 1: SWA averages the weights that epochs with index
    # SWA_START - 1 .. EPOCHS - 1 start from, and puts the average into the model at the end
    averaged = [torch.stack(ws).mean(0) for ws in zip(*weights.snapshots[SWA_START - 1:])]
    for final, mean in zip(model.parameters(), averaged):
        assert torch.allclose(final, mean, atol=1e-6), "the final weights are not the SWA average"
    assert trainer.optimizers[0].param_groups[0]["lr"] == SWA_LR, trainer.optimizers[0].param_groups[0]["lr"]

    assert isinstance(trainer.profiler, SimpleProfiler), type(trainer.profiler)
    summary = trainer.profiler.summary()
    assert "forward_and_loss" in summary, summary
    print(f"CORPUS_OK profiler_and_schedulers: {trainer.global_step} steps, SWA from epoch {SWA_START} of {EPOCHS}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
