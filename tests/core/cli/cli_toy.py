"""A Module and a DataModule in an importable module, as a user's package would hold them:
the subprocess tests put this folder on PYTHONPATH and name the classes ``cli_toy.Regressor``."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen


class Regressor(fulmen.Module):
    """A linear model; ``save_hyperparameters`` puts its arguments in checkpoints."""

    def __init__(self, hidden: int = 4, lr: float = 0.1, name: str = "toy") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Untyped(Regressor):
    def __init__(self, width=8, **kwargs) -> None:
        super().__init__(**kwargs)


class Points(fulmen.DataModule):
    """A fixed random regression set (its own generator, so each run sees the same data)."""

    def __init__(self, size: int = 32, batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(size, 3, generator=generator)
        self.data = TensorDataset(x, x.sum(dim=1, keepdim=True))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size)

    def predict_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size)


def main() -> None:
    """A LightningCLI-style script: ``python cli_toy.py fit --model.hidden 8``."""
    from fulmen.cli import CLI

    CLI(Regressor, Points)


if __name__ == "__main__":
    main()


class RecordStrategy(fulmen.Callback):
    """Writes which strategy class the run got (its module and marker) to ``path`` as JSON."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer) -> None:
        import json

        strategy = type(trainer.strategy)
        with open(self.path, "w") as handle:
            json.dump({"module": strategy.__module__, "marker": getattr(strategy, "marker", None)}, handle)
