"""A Fabric loop under DeepSpeed ZeRO-3 (fulmen re-runs this script in each of 2 processes):
the model is built inside ``fabric.init_module()`` (partitioned as it is created), set up
with its optimizer, trained for ``--steps`` steps, saved with ``fabric.save`` after step
``--save-at``; with ``--resume`` it loads that checkpoint first and goes on from there.
Rank r writes ``<out>/rank_<r>.json``: losses by step, whether the parameters were
partitioned at creation, and the full parameters at the end."""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fulmen  # noqa: E402
from ds_helpers import regression_data  # noqa: E402


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.dump_traceback_later(420, repeat=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--save-at", type=int, default=6)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fabric = fulmen.Fabric(accelerator="cpu", strategy="deepspeed_stage_3", devices=2)
    fabric.launch()
    fabric.seed_everything(0)
    with fabric.init_module():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 2))
    partitioned = all(p.numel() == 0 and hasattr(p, "ds_id") for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(torch.utils.data.DataLoader(regression_data(96), batch_size=4))

    step = 0
    if args.resume:
        state = {"model": model, "optimizer": optimizer, "step": 0}
        fabric.load(args.checkpoint, state)
        step = state["step"]
    losses = []
    batches = iter(loader)
    for _ in range(step):  # the data of the steps before the checkpoint
        next(batches)
    while step < args.steps:
        x, y = next(batches)
        loss = nn.functional.mse_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        losses.append([step, loss.item()])
        if step == args.save_at and not args.resume:
            fabric.save(args.checkpoint, {"model": model, "optimizer": optimizer, "step": step})

    import deepspeed

    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params):
        full = {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}
    result = {"rank": fabric.global_rank, "losses": losses, "partitioned_at_creation": partitioned, "parameters": full}
    (out / f"rank_{fabric.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
