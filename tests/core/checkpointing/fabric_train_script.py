"""A hand-written Fabric loop that the checkpointing tests kill and resume.

Every ``--every`` steps it saves ``{"model", "optimizer", "scheduler", "loader", "step",
"epoch"}`` with ``fabric.save`` to ``<root>/last.ckpt``; with ``--resume`` it starts with
``fabric.load`` of that file when it exists. Prints ``STEP N`` after each optimizer step and
``PAUSED EVENT`` at ``--pause`` (``step:N`` before step N's save, ``saved:N`` after it,
``midwrite:K`` halfway through the K-th save), like ``train_script.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import fulmen
import train_script
from train_script import Pauser, SlowCheckpointIO, dataset, say


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--pause", default=None)
    parser.add_argument("--slow-save", type=float, default=0.0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    train_script.PAUSER = pauser = Pauser(args.pause)
    plugins = [SlowCheckpointIO(args.slow_save)] if args.slow_save or (args.pause or "").startswith("midwrite") else None
    fabric = fulmen.Fabric(accelerator="cpu", plugins=plugins)
    fabric.seed_everything(4321)

    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.25), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(DataLoader(dataset(96, 0), batch_size=8, shuffle=True))

    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loader": loader, "step": 0, "epoch": 0}
    last = Path(args.root) / "last.ckpt"
    if args.resume and last.exists():
        fabric.load(last, state)
    say(f"START epoch={state['epoch']} step={state['step']}")

    model.train()
    for epoch in range(state["epoch"], args.epochs):
        state["epoch"] = epoch
        for x, y in loader:  # a resumed loader continues with the batch after the saved one
            x = x + 0.05 * torch.randn_like(x)
            scale = 1.0 + 0.02 * (random.random() - 0.5) + 0.02 * (float(np.random.rand()) - 0.5)
            loss = nn.functional.mse_loss(model(x) * scale, y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            state["step"] += 1
            step = state["step"]
            say(f"STEP {step}")
            pauser.event("step", step)
            if step % args.every == 0:
                fabric.save(last, state)
                pauser.event("saved", step)
        scheduler.step()
        state["epoch"] = epoch + 1
    say(f"DONE step={state['step']}")
    if args.out:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, args.out)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is closed by now; skipping the interpreter's teardown of torch saves ~0.6 s
    # per process, which adds up over the many runs of the kill tests.
    os._exit(code)
