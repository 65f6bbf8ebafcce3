"""A Fabric loop under ``strategy="ddp"``: collectives and a data-parallel step, per rank JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fulmen  # noqa: E402
from helpers import loader  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    fabric = fulmen.Fabric(accelerator="cpu", strategy="ddp", devices=2)
    fabric.launch()
    fabric.seed_everything(0)
    rank = fabric.global_rank
    reduced_sum = fabric.all_reduce(torch.tensor(float(rank + 1)), reduce_op="sum")
    reduced_mean = fabric.all_reduce(torch.tensor(float(rank)), reduce_op="mean")
    gathered = fabric.all_gather(torch.tensor([rank, rank * 10]))
    broadcast = fabric.broadcast({"from": rank}, src=1)
    fabric.barrier()

    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)
    data = fabric.setup_dataloaders(loader(64, batch_size=8))
    steps = 0
    for x, y in data:
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()
        steps += 1
    result = {
        "rank": rank,
        "sum": reduced_sum.item(),
        "mean": reduced_mean.item(),
        "gathered": gathered.tolist(),
        "broadcast": broadcast,
        "steps": steps,
        "weight": model.module.weight.flatten().tolist(),
        "bias": model.module.bias.tolist(),
    }
    (out / f"fabric_rank_{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
