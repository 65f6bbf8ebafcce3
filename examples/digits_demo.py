"""Train a small classifier on scikit-learn's bundled handwritten digits with fulmen.

Run with ``nox -s demo`` (sets everything up) or ``python examples/digits_demo.py``.
The data ships inside scikit-learn, so the demo needs no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class DigitsData(fulmen.DataModule):
    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels are 0..16
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.seed))
        n_val = int(len(x) * self.hparams.val_fraction)
        self.val = TensorDataset(x[order[:n_val]], y[order[:n_val]])
        self.train = TensorDataset(x[order[n_val:]], y[order[n_val:]])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=256)


class DigitsClassifier(fulmen.Module):
    def __init__(self, hidden: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--root", default="demo_runs")
    args = parser.parse_args()

    fulmen.seed_everything(42)
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=2, save_last=True, filename="{epoch}-{val_acc:.4f}")
    trainer = fulmen.Trainer(
        max_epochs=args.epochs,
        default_root_dir=args.root,
        log_every_n_steps=10,
        callbacks=[checkpoint, LearningRateMonitor(), EarlyStopping(monitor="val_loss", patience=5)],
    )
    model = DigitsClassifier()
    data = DigitsData()
    trainer.fit(model, datamodule=data)

    best = DigitsClassifier.load_from_checkpoint(checkpoint.best_model_path)
    result = trainer.validate(best, datamodule=data, verbose=False)[0]
    print()
    print(f"validation accuracy of the best checkpoint: {result['val_acc']:.4f}")
    print(f"best checkpoint: {Path(checkpoint.best_model_path).resolve()}")
    print(f"metrics:         {Path(trainer.logger.log_dir, 'metrics.csv').resolve()}")


if __name__ == "__main__":
    main()
