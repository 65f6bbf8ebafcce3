"""How long the training loop stops for one checkpoint save: TorchCheckpointIO vs AsyncCheckpointIO.

    python benchmarks/checkpoint_save_pause.py [--saves 6] [--mb 300] [--steps-between 3] [--dir DIR]

A Trainer fits a model of about ``--mb`` MB of fp32 parameters (four square Linear layers) with
Adam, so a checkpoint holds about three times that (weights and Adam's two moments). A callback
calls ``trainer.save_checkpoint`` every ``--steps-between`` steps and times the call: that is
the pause of the loop. Sync and async saves alternate (interleaved, so drift in the machine's
load hits both alike), and the checkpoint IO of the one Trainer is swapped between them; before
a sync save any async write still running is waited for, outside the timing, so the two never
share the disk. Printed: median, min and max pause of each, their ratio, the file size, and how
long the async writes took in the background (the pause stays small only while the interval
between saves is longer than that).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.io import TorchCheckpointIO
from fulmen.io.async_checkpoint_io import AsyncCheckpointIO


class TimedAsync(AsyncCheckpointIO):
    """Records how long each background write took."""

    def __init__(self) -> None:
        super().__init__()
        self.write_seconds = []

    def _write(self, snapshot, path, storage_options) -> None:
        start = time.perf_counter()
        super()._write(snapshot, path, storage_options)
        self.write_seconds.append(time.perf_counter() - start)


class Big(fulmen.Module):
    def __init__(self, width: int, layers: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-4)


class SaveTimer(fulmen.Callback):
    def __init__(self, directory: Path, saves: int, every: int) -> None:
        self.directory, self.saves, self.every = directory, saves, every
        self.sync_io, self.async_io = TorchCheckpointIO(), TimedAsync()
        self.pauses = {"sync": [], "async": []}
        self.count = 0

    def on_train_batch_end(self, trainer) -> None:
        if trainer.global_step % self.every or self.count >= 2 * self.saves:
            return
        kind = "sync" if self.count % 2 == 0 else "async"
        if kind == "sync":
            self.async_io.wait()  # the previous async write may not share the disk with this save
            for old in self.directory.glob("*.ckpt"):  # ~1 GB each: keep only the first, for its size
                if old.name != "sync-0.ckpt":
                    old.unlink()
        trainer.strategy.checkpoint_io = self.sync_io if kind == "sync" else self.async_io
        path = self.directory / f"{kind}-{self.count}.ckpt"
        start = time.perf_counter()
        trainer.save_checkpoint(path)
        self.pauses[kind].append(time.perf_counter() - start)
        self.count += 1
        if self.count >= 2 * self.saves:
            trainer.should_stop = True

    def on_train_end(self, trainer) -> None:
        self.async_io.wait()
        trainer.strategy.checkpoint_io = self.sync_io


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=6, help="saves of each kind (default 6)")
    parser.add_argument("--mb", type=float, default=300.0, help="MB of fp32 parameters (default 300)")
    parser.add_argument("--steps-between", type=int, default=3, help="training steps between two saves")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args(argv)

    width = int(((args.mb * 1e6 / 4) / 4) ** 0.5)  # four width x width layers
    directory = Path(args.dir or tempfile.mkdtemp(prefix="fulmen-save-pause-"))
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = Big(width)
    params_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    timer = SaveTimer(directory, args.saves, args.steps_between)
    trainer = fulmen.Trainer(
        accelerator="cpu", max_steps=2 * args.saves * args.steps_between + 1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], default_root_dir=directory,
    )
    data = DataLoader(TensorDataset(torch.randn(64, width)), batch_size=8)
    started = time.perf_counter()
    trainer.fit(model, data)
    total = time.perf_counter() - started
    file_mb = (directory / "sync-0.ckpt").stat().st_size / 1e6

    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"model: 4 x Linear({width}, {width}), {params_mb:.0f} MB fp32 parameters, Adam; checkpoint file {file_mb:.0f} MB")
    print(f"{args.saves} saves of each kind, interleaved, every {args.steps_between} steps, in {directory} ({total:.0f} s in all)\n")
    sync, asyn = timer.pauses["sync"], timer.pauses["async"]
    rows = [("sync (TorchCheckpointIO)", sync), ("async (AsyncCheckpointIO)", asyn)]
    print(f"{'loop pause per save':28s} {'median':>9s} {'min':>9s} {'max':>9s}")
    for name, values in rows:
        print(f"{name:28s} {statistics.median(values) * 1e3:7.0f}ms {min(values) * 1e3:7.0f}ms {max(values) * 1e3:7.0f}ms")
    writes = timer.async_io.write_seconds
    print(f"{'async write in background':28s} {statistics.median(writes) * 1e3:7.0f}ms {min(writes) * 1e3:7.0f}ms {max(writes) * 1e3:7.0f}ms")
    print(f"\nsync / async median pause: {statistics.median(sync) / statistics.median(asyn):.1f}x")
    if not args.dir:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
