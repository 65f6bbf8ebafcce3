"""Fabric's Lightning verbs under ``strategy="ddp"`` with 2 gloo ranks (``python THIS OUT``):
each rank writes what it saw to ``OUT/rank_<r>.json``. ``ddp`` re-runs this file for rank 1."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import fulmen
from fulmen.utilities import rank_zero_only


def _first(fabric, out: Path, name: str, local: bool) -> dict:
    """Rank 0 writes a file inside the block (after a pause that gives a rank not held back
    every chance to look first); the other rank records whether it was there on entry."""
    marker = out / f"{name}.txt"
    with fabric.rank_zero_first(local=local):
        seen = marker.exists()
        if fabric.global_rank == 0:
            time.sleep(1.0)
            marker.write_text("written by rank 0")
    return {"seen_on_entry": seen}


def main() -> None:
    out = Path(sys.argv[1])
    fabric = fulmen.Fabric(accelerator="cpu", strategy="ddp", devices=2)
    fabric.launch()
    rank = fabric.global_rank

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        fabric.print("hello from", rank)

    record = {
        "rank": rank,
        "rank_zero_only.rank": rank_zero_only.rank,
        "printed": printed.getvalue(),
        "global": _first(fabric, out, "global", local=False),
        "local": _first(fabric, out, "local", local=True),
    }

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    fabric.save(out / "filtered.ckpt", {"model": model, "step": 7}, filter={"model": lambda name, _: name.startswith("1.")})
    if rank == 0:
        torch.save({k: torch.full_like(v, 0.5) for k, v in model.module.state_dict().items()}, out / "raw.pt")
    fabric.barrier()
    fabric.load_raw(out / "raw.pt", model)
    record["loaded_raw"] = all(bool((p == 0.5).all()) for p in model.module.parameters())
    (out / f"rank_{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
