"""Trainer/Fabric subclasses (and what runs with them) for test_subclass_in_spawned_ranks.py.

They live at module level in a module of their own because ``ddp_spawn`` workers unpickle
them by reference: each worker imports this module and builds ``type(trainer)(*args, **kwargs)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

import fulmen
from helpers import BoringModule


class MarkerTrainer(fulmen.Trainer):
    """A constructor of its own (a positional ``marker_dir`` before the Trainer's keywords)
    and ``print`` overridden: the base prints on rank zero only, this one writes a marker
    file on every rank."""

    def __init__(self, marker_dir, tag: str = "untagged", **kwargs) -> None:
        self.marker_dir = Path(marker_dir)
        self.tag = tag
        super().__init__(**kwargs)

    def print(self, *args, **kwargs) -> None:
        record = {
            "class": type(self).__name__,
            "tag": self.tag,
            "rank": self.global_rank,
            "world_size": self.world_size,
            "pid": os.getpid(),
            "text": " ".join(map(str, args)),
        }
        with open(self.marker_dir / f"rank_{self.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


class PrintingModule(BoringModule):
    """Calls ``trainer.print`` at the start of every epoch's first batch."""

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.trainer.print(f"epoch {self.current_epoch} step {self.trainer.global_step}")
        return super().training_step(batch, batch_idx)


class SeedOffsetFabric(fulmen.Fabric):
    """Its own constructor signature (``tag`` first) and ``seed_everything`` overridden to
    give each rank ``seed + global_rank``."""

    def __init__(self, tag: str, *, out_dir, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tag = tag
        self.out_dir = str(out_dir)

    def seed_everything(self, seed=None, workers: bool = False) -> int:
        return super().seed_everything(seed + self.global_rank, workers=workers)


def record_rank(fabric, base_seed: int) -> str:
    """``fabric.launch(record_rank, base_seed)``: what each rank was given, to a JSON file."""
    seed = fabric.seed_everything(base_seed)
    total = fabric.all_reduce(torch.tensor(float(fabric.global_rank + 1)), reduce_op="sum")
    record = {
        "class": type(fabric).__name__,
        "tag": fabric.tag,
        "rank": fabric.global_rank,
        "world_size": fabric.world_size,
        "seed": seed,
        "torch_initial_seed": torch.initial_seed(),
        "sum": total.item(),
        "pid": os.getpid(),
    }
    Path(fabric.out_dir, f"fabric_rank_{fabric.global_rank}.json").write_text(json.dumps(record))
    return type(fabric).__name__
