"""A small autoencoder on synthetic low-rank data, written against Lightning 2.x.

Exercises: ``import lightning as L`` with attribute chains, save_hyperparameters,
self.log(prog_bar, on_step, on_epoch), configure_optimizers returning a dict with a
plateau scheduler and its monitor, ModelCheckpoint, EarlyStopping, LearningRateMonitor,
CSVLogger, a callback with Lightning's hook signatures, load_from_checkpoint.

Run: python autoencoder.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import csv
import glob
import os
import sys
import tempfile

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def low_rank_data(n, features=16, rank=3, seed=0):
    basis = torch.randn(rank, features, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n, rank, generator=g)
    return codes @ basis + 0.01 * torch.randn(n, features, generator=g)


class AutoEncoder(L.LightningModule):
    def __init__(self, features=16, hidden=3, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, hidden))
        self.decoder = nn.Sequential(nn.Linear(hidden, 32), nn.Tanh(), nn.Linear(32, features))

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def _loss(self, batch):
        (x,) = batch
        return nn.functional.mse_loss(self(x), x)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), prog_bar=True, on_epoch=True)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


class LossHistory(L.Callback):
    """Keeps every training loss and every epoch's validation loss, the Lightning way."""

    def __init__(self):
        self.train_losses = []
        self.val_losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_losses.append(float(outputs["loss"]))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics["val_loss"]))


def main(out):
    L.seed_everything(7)
    train = DataLoader(TensorDataset(low_rank_data(256, seed=0)), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(low_rank_data(64, seed=1)), batch_size=32)

    history = LossHistory()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=os.path.join(out, "ckpt"), monitor="val_loss", save_top_k=1)
    trainer = L.Trainer(
        max_epochs=6,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(save_dir=out, name="ae"),
        callbacks=[
            history,
            checkpoint,
            L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=3),
            L.pytorch.callbacks.LearningRateMonitor(logging_interval="epoch"),
        ],
        log_every_n_steps=2,
        enable_progress_bar=False,
        default_root_dir=out,
    )
    model = AutoEncoder()
    trainer.fit(model, train, val)

    first, last = sum(history.train_losses[:4]) / 4, sum(history.train_losses[-4:]) / 4
    assert last < first * 0.5, f"training loss did not fall: {first:.4f} -> {last:.4f}"
    assert len(history.val_losses) == trainer.current_epoch, (history.val_losses, trainer.current_epoch)

    best = checkpoint.best_model_path
    assert best and os.path.isfile(best), f"no best checkpoint: {best!r}"
    restored = AutoEncoder.load_from_checkpoint(best)
    assert restored.hparams.hidden == 3 and restored.hparams.lr == 0.01, dict(restored.hparams)
    restored.eval()
    with torch.no_grad():
        x = val.dataset.tensors[0]
        restored_loss = nn.functional.mse_loss(restored(x), x).item()
    assert abs(restored_loss - float(checkpoint.best_model_score)) < 1e-3, (restored_loss, checkpoint.best_model_score)

    metrics_files = glob.glob(os.path.join(out, "ae", "**", "metrics.csv"), recursive=True)
    assert metrics_files, f"no metrics.csv under {out}"
    with open(metrics_files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    for name in ("train_loss_step", "train_loss_epoch", "val_loss", "lr-Adam"):
        assert name in columns, f"{name} missing from metrics.csv columns {sorted(columns)}"
    print(f"CORPUS_OK autoencoder: train loss {first:.4f} -> {last:.4f}, best val {float(checkpoint.best_model_score):.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
