"""Shared pieces of the DeepSpeed tests: a small model whose gradients exercise clipping,
regression data, and a helper that runs a script as a real 2-process launch and keeps its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
LAUNCH_TIMEOUT = 480  # the launch took 110-170 s on this shared 2-core machine


def extensions_dir() -> str:
    """Where DeepSpeed's JIT-built ops (deepspeed_shm_comm_op, 40-60 s to build) are kept:
    the caller's TORCH_EXTENSIONS_DIR, or one stable cache, so they are built once."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "fulmen-deepspeed-extensions")


class Regressor(fulmen.Module):
    """An MLP on regression data; records its per-micro-batch training losses."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
        self.losses = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def forward(self, x):
        return self.net(x)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self.net(x), y))

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0])

    def configure_optimizers(self):
        # SGD, not Adam: Adam's update hardly changes when every gradient is scaled by the
        # same factor, so a loss divided twice for accumulation would go unnoticed.
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def regression_data(n: int = 64, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    w = torch.randn(8, 2, generator=generator)
    return TensorDataset(x, torch.sin(x @ w) * 3)


def loader(n: int = 64, batch_size: int = 4) -> DataLoader:
    return DataLoader(regression_data(n), batch_size=batch_size)


def run(cmd, cwd: Path, name: str = "launch", timeout: int = LAUNCH_TIMEOUT, env=None):
    """Run a launch with its output in ``cwd/<name>.log``; returns the process, its log
    text and the seconds it took."""
    log = Path(cwd) / f"{name}.log"
    start = time.monotonic()
    environment = {**os.environ, **(env or {})}
    environment.pop("MASTER_PORT", None)
    environment.setdefault("OMP_NUM_THREADS", "1")
    environment["PYTHONUNBUFFERED"] = "1"  # a killed rank's last lines reach the log
    environment.setdefault("TORCH_EXTENSIONS_DIR", extensions_dir())
    with open(log, "w") as handle:
        proc = subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                              env=environment, cwd=cwd)
    proc.log = log.read_text()
    proc.seconds = time.monotonic() - start
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def ranks(directory: Path, count: int = 2):
    """The per-rank JSON results a launch wrote into ``directory``."""
    return [read_json(Path(directory) / f"rank_{r}.json") for r in range(count)]
