"""A small but complete training run that the checkpointing tests start, kill and resume.

Run as a script (never imported by pytest: its name does not start with ``test_``)::

    python train_script.py --root DIR [--resume] [--out result.pt] [--pause EVENT] ...

What it exercises: dropout, noise drawn from torch, Python and NumPy random streams in
``training_step``, a shuffled map-style dataset, ``deterministic=True``, ``seed_everything``,
Adam (which has state), an epoch-interval StepLR, validation in the middle of epochs,
``ModelCheckpoint(every_n_train_steps=k, save_last=True)``, and with ``--extras`` a second,
top-k ModelCheckpoint on ``val_loss``, EarlyStopping (which stops the run) and a Timer. The
CSV logger logs every step.

Lines it prints for the parent (flushed at once):

``START epoch=E step=S batch=B from=PATH timer_offset=T``  when training (re)starts
``STEP N``                    after optimizer step N (before that step's checkpoint)
``HOLDING N``                 with ``--hold-at N``: waiting for a preemption signal after step N
``PAUSED EVENT``              it reached ``--pause EVENT`` and now sleeps until killed
``DONE step=N``               training finished

``--pause`` takes ``step:N`` (on_train_batch_end of step N, before its checkpoint),
``saved:N`` (right after the step-N checkpoint and last.ckpt are on disk, before that
batch's logging and validation), ``val_end:N`` (after the validation at step N and every
callback's on_validation_end) or ``midwrite:K`` (halfway through writing this process's K-th
checkpoint file; last.ckpt is a byte copy and does not count). ``--slow-save S`` sleeps S
seconds halfway through every checkpoint write, so that a kill at a random time often lands
inside a save. ``--hold-at N`` makes a preemption signal land right after step N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.timer import Timer
from fulmen.io.atomic import atomic_write
from fulmen.io.checkpoint_io import TorchCheckpointIO
from fulmen.io.integrity import HashingWriter
from fulmen.loggers.csv_logger import CSVLogger

PAUSE_SECONDS = 600


def say(*parts) -> None:
    print(*parts, flush=True)


class Pauser:
    """Counts events; at the one named by ``--pause`` it announces itself and sleeps."""

    def __init__(self, spec: str | None) -> None:
        self.kind, _, count = (spec or ":").partition(":")
        self.count = int(count) if count else -1
        self.seen = {}

    def event(self, kind: str, number: int | None = None) -> None:
        if kind != self.kind:
            return
        if number is None:
            number = self.seen[kind] = self.seen.get(kind, 0) + 1
        if number == self.count:
            say(f"PAUSED {kind}:{number}")
            time.sleep(PAUSE_SECONDS)


PAUSER = Pauser(None)


class _SlowHandle:
    """A file handle that pauses once, after half of ``expected`` bytes went through."""

    def __init__(self, handle, expected: int, on_half) -> None:
        self._handle, self._expected, self._on_half = handle, expected, on_half
        self.written = 0
        self._fired = False

    def write(self, data) -> int:
        n = self._handle.write(data)
        self.written += len(memoryview(data).cast("B"))
        if not self._fired and self.written * 2 >= self._expected:
            self._fired = True
            self._handle.flush()
            os.fsync(self._handle.fileno())  # half a file really is on disk when we are killed
            self._on_half()
        return n

    def flush(self) -> None:
        self._handle.flush()


class SlowCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that stops halfway through each write (to be killed there)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.writes = 0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.writes += 1
        number = self.writes

        def on_half() -> None:
            PAUSER.event("midwrite", number)
            if self.delay:
                time.sleep(self.delay)

        def write(handle) -> None:
            import io

            # The size of the payload, to know where "halfway" is.
            probe = io.BytesIO()
            torch.save(checkpoint, probe)
            slow = _SlowHandle(handle, probe.tell(), on_half)
            writer = HashingWriter(slow)
            torch.save(checkpoint, writer)
            handle.write(writer.footer())

        atomic_write(path, write)


class PausingCheckpoint(ModelCheckpoint):
    def _save(self, trainer) -> None:
        super()._save(trainer)
        PAUSER.event("saved", trainer.global_step)


class Reporter(fulmen.Callback):
    """First in the callback list: prints progress, offers the ``step`` pause point and
    ``--hold-at N``: after step N print ``HOLDING N`` and wait (up to a minute) until a
    preemption signal arrived, so the signal lands at that step whatever the machine's load."""

    def __init__(self, hold_at: int = -1) -> None:
        self.hold_at = hold_at

    def on_train_start(self, trainer) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        offset = timer._offset if timer is not None else 0.0
        say(
            f"START epoch={trainer.current_epoch} step={trainer.global_step} "
            f"batch={trainer._progress.batch_idx} from={trainer._resume_path} timer_offset={offset:.6f}"
        )

    def on_train_batch_end(self, trainer) -> None:
        say(f"STEP {trainer.global_step}")
        PAUSER.event("step", trainer.global_step)
        if trainer.global_step == self.hold_at:
            say(f"HOLDING {self.hold_at}")
            deadline = time.monotonic() + 60
            while not trainer._preemption.requested and time.monotonic() < deadline:
                time.sleep(0.01)


class Net(fulmen.Module):
    def __init__(self, lr: float = 0.03, gamma: float = 0.7) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.25), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x + 0.05 * torch.randn_like(x)  # torch's global stream
        scale = 1.0 + 0.02 * (random.random() - 0.5) + 0.02 * (float(np.random.rand()) - 0.5)
        loss = nn.functional.mse_loss(self(x) * scale, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def on_validation_end(self) -> None:
        if self.trainer is not None and not self.trainer.sanity_checking:
            PAUSER.event("val_end", self.trainer.global_step)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=self.hparams.gamma)}


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return TensorDataset(x, torch.sin(x @ w) + 0.05 * torch.randn(n, 1, generator=g))


def main(argv=None) -> int:
    global PAUSER
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--resume", action="store_true", help='fit(..., ckpt_path="last")')
    parser.add_argument("--ckpt-path", default=None, help="fit(..., ckpt_path=this) (overrides --resume)")
    parser.add_argument("--out", default=None, help="write final model/optimizer/scheduler state here")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=3, help="ModelCheckpoint every_n_train_steps")
    parser.add_argument("--val-every", type=int, default=6, help="val_check_interval in batches")
    parser.add_argument("--extras", action="store_true", help="top-k checkpoint, EarlyStopping, Timer")
    parser.add_argument("--async-save", action="store_true", help='plugins=["async"]')
    parser.add_argument("--pause", default=None)
    parser.add_argument("--slow-save", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=0, help="train loader num_workers")
    parser.add_argument("--hold-at", type=int, default=-1, help="after this step, wait for a preemption signal")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    PAUSER = Pauser(args.pause)
    fulmen.seed_everything(1234)

    root = Path(args.root)
    callbacks = [Reporter(args.hold_at)]
    best = es = timer = None
    if args.extras:
        es = EarlyStopping(monitor="val_loss", patience=4, min_delta=1e6)  # never "improves": stops at the 5th check
        timer = Timer()
        best = ModelCheckpoint(monitor="val_loss", save_top_k=2, filename="best-{step}")
        callbacks += [es, timer, best]
    every = PausingCheckpoint(every_n_train_steps=args.every, save_last=True)
    callbacks.append(every)

    plugins = []
    if args.slow_save or (args.pause or "").startswith("midwrite"):
        plugins.append(SlowCheckpointIO(args.slow_save))
    if args.async_save:
        from fulmen.io.async_checkpoint_io import AsyncCheckpointIO

        plugins = [AsyncCheckpointIO(plugins[0] if plugins else None)]

    trainer = fulmen.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        deterministic=True,
        default_root_dir=root,
        logger=CSVLogger(root, name="logs"),
        log_every_n_steps=1,
        val_check_interval=args.val_every,
        callbacks=callbacks,
        plugins=plugins or None,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Net()
    train = DataLoader(dataset(96, 0), batch_size=8, shuffle=True, num_workers=args.workers)
    val = DataLoader(dataset(32, 1), batch_size=16)
    ckpt_path = args.ckpt_path or ("last" if args.resume else None)
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    say(f"DONE step={trainer.global_step}")

    if args.out:
        optimizer = trainer.optimizers[0].optimizer
        summary = {
            "global_step": trainer.global_step,
            "current_epoch": trainer.current_epoch,
            "log_dir": trainer.log_dir,
            "last_model_path": every.last_model_path,
        }
        if args.extras:
            summary.update(
                es={"wait_count": es.wait_count, "best_score": float(es.best_score), "stopped_epoch": es.stopped_epoch},
                best={
                    "best_k_models": {Path(p).name: s for p, s in best.best_k_models.items()},
                    "best_model_path": Path(best.best_model_path).name,
                    "kth_best_model_path": Path(best.kth_best_model_path).name,
                    "best_model_score": float(best.best_model_score),
                },
                timer_elapsed=timer.time_elapsed("train"),
            )
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
                "summary": json.dumps(summary),
            },
            args.out,
        )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is closed by now; skipping the interpreter's teardown of torch saves ~0.6 s
    # per process, which adds up over the many runs of the kill tests.
    os._exit(code)
