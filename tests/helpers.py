"""Small models and data shared by the tests (importable as ``from helpers import ...``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import fulmen


def regression_data(n: int = 64, features: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    w = torch.randn(features, 1, generator=generator)
    y = x @ w + 0.01 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def loader(n: int = 64, batch_size: int = 8, shuffle: bool = False, seed: int = 0, **kwargs) -> DataLoader:
    return DataLoader(regression_data(n, seed=seed), batch_size=batch_size, shuffle=shuffle, **kwargs)


class StreamDataset(IterableDataset):
    """An endless stream of regression samples (no length)."""

    def __init__(self, features: int = 8, seed: int = 0) -> None:
        self.features = features
        self.seed = seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            x = torch.randn(self.features, generator=generator)
            yield x, x.sum(dim=0, keepdim=True)


class BoringModule(fulmen.Module):
    """A linear regression with train/val/test/predict steps that log their loss."""

    def __init__(self, features: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(features, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        return self(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def quiet_trainer(tmp_path, **kwargs) -> fulmen.Trainer:
    """A Trainer that writes under ``tmp_path`` and prints no bars or summaries."""
    kwargs.setdefault("default_root_dir", tmp_path)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("accelerator", "cpu")
    return fulmen.Trainer(**kwargs)
