"""A 2-process Fabric DDP loop killed after ``fabric.save`` and resumed with ``fabric.load``
draws, on every rank, the random numbers an uninterrupted run draws: each rank gets its own
random state back, not rank 0's.

This file is also the training script (``python test_fabric_rng_resume.py --out DIR ...``);
``strategy="ddp"`` re-runs it for rank 1, as the other Fabric DDP tests do.

Every rank sees the same batches and holds the same parameters (DDP), so the only thing that
tells the ranks apart is their random streams: dropout, ``randn_like`` input noise and a
Python/NumPy loss scale. Restoring rank 0's state on rank 1 would make rank 1 draw rank 0's
dropout masks after the resume, which changes its loss at the first resumed step and, through
the all-reduced gradients, every rank's parameters.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for test_ddp's helpers

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fulmen  # noqa: E402

THIS = Path(__file__).resolve()
STEPS, SAVE_AT, EXIT_AT = 10, 4, 6  # run B saves after step 4, trains on to 6 and dies there
KILLED = 17  # run B's exit code: os._exit on every rank, no teardown, no atexit


def train(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--save-at", type=int, default=0)
    parser.add_argument("--exit-at", type=int, default=0)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    fabric = fulmen.Fabric(accelerator="cpu", strategy="ddp", devices=2)
    fabric.launch()
    rank = fabric.global_rank

    fabric.seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model, optimizer = fabric.setup(model, optimizer)
    # From here on each rank draws its own numbers (torch, Python, NumPy).
    fabric.seed_everything(100 + 7 * rank)

    data = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(STEPS, 16, 8, generator=data), torch.randn(STEPS, 16, 1, generator=data)

    masks = {}

    def record_mask(module, inputs, output):
        masks[state["step"] + 1] = (output == 0) & (inputs[0] != 0)  # what dropout zeroed

    model.module[2].register_forward_hook(record_mask)
    state = {"model": model, "optimizer": optimizer, "step": 0}
    if args.resume:
        fabric.load(args.resume, state)
    start = state["step"]

    losses = {}
    model.train()
    while state["step"] < STEPS:
        step = state["step"] + 1
        x = xs[step - 1] + 0.05 * torch.randn_like(xs[step - 1])  # the same batch on both ranks
        scale = 1.0 + 0.02 * (random.random() - 0.5) + 0.02 * (float(np.random.rand()) - 0.5)
        loss = nn.functional.mse_loss(model(x) * scale, ys[step - 1])
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()
        losses[step] = loss.detach().clone()
        state["step"] = step
        if step == args.save_at:
            fabric.save(Path(args.out) / "step.ckpt", state)
        if step == args.exit_at:
            print(f"rank {rank} dies at step {step}", flush=True)
            os._exit(KILLED)

    params = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    torch.save({"start": start, "losses": losses, "masks": masks, "params": params}, Path(args.out) / f"rank_{rank}.pt")


# ------------------------------------------------------------------------------------ the test
def test_killed_and_resumed_ddp_loop_draws_each_ranks_own_random_stream(tmp_path):
    from test_ddp import PYTHON, run

    def launch(name, *args):
        out = tmp_path / name
        out.mkdir()
        proc, _ = run([PYTHON, str(THIS), "--out", str(out), *map(str, args)], tmp_path, name=name)
        return proc, out

    # A (uninterrupted) and B (killed) are independent: run them side by side.
    with ThreadPoolExecutor(2) as pool:
        uninterrupted = pool.submit(launch, "A")
        proc, killed = launch("B", "--save-at", SAVE_AT, "--exit-at", EXIT_AT)
        proc_a, full = uninterrupted.result()
    assert proc_a.returncode == 0, proc_a.log
    assert proc.returncode != 0 and f"dies at step {EXIT_AT}" in proc.log, proc.log
    assert not list(killed.glob("rank_*.pt")), "run B must not have finished"
    checkpoint = killed / "step.ckpt"
    proc, resumed = launch("C", "--resume", checkpoint)
    assert proc.returncode == 0, proc.log

    reference = [torch.load(full / f"rank_{r}.pt", weights_only=True) for r in range(2)]
    result = [torch.load(resumed / f"rank_{r}.pt", weights_only=True) for r in range(2)]

    # The ranks' streams differ (else this test could not tell rank 0's state from rank 1's):
    # same batch, same parameters, yet other dropout masks and other losses at every step.
    for step in range(1, STEPS + 1):
        assert not torch.equal(reference[0]["masks"][step], reference[1]["masks"][step]), step
        assert not torch.equal(reference[0]["losses"][step], reference[1]["losses"][step]), step
    saved = torch.load(checkpoint, weights_only=True)["_fulmen"]["rng"]["per_rank"]
    assert len(saved) == 2 and not torch.equal(saved[0]["torch"], saved[1]["torch"])

    resumed_steps = list(range(SAVE_AT + 1, STEPS + 1))
    for rank in range(2):
        assert result[rank]["start"] == SAVE_AT and sorted(result[rank]["losses"]) == resumed_steps
    # Step by step: a rank handed another rank's state draws that rank's masks at once.
    for step in resumed_steps:
        for rank in range(2):
            assert torch.equal(result[rank]["masks"][step], reference[rank]["masks"][step]), (
                f"rank {rank} drew other dropout masks at step {step} than the uninterrupted run"
            )
    for rank in range(2):
        for step in resumed_steps:
            assert torch.equal(result[rank]["losses"][step], reference[rank]["losses"][step]), (rank, step)
        for key, value in reference[rank]["params"].items():
            assert torch.equal(result[rank]["params"][key], value), (rank, key)


if __name__ == "__main__":
    train()
