"""DDP or FSDP on 2 CPU processes (gloo): fulmen against a hand-written loop.

    python benchmarks/ddp.py [--repeats 3] [--steps 1000] [--warmup 50] [--json out.json]
    python benchmarks/ddp.py --strategy fsdp --model gpt --steps 60 --warmup 5

``--strategy ddp`` (default): ``strategy="ddp", devices=2`` against ``DistributedDataParallel``.
``--strategy fsdp``: fulmen-strategy-fsdp's ``FSDPStrategy(auto_wrap_policy={Block})`` against
a hand-written FSDP2 loop that calls ``fully_shard`` on each transformer block and then on the
root (what the strategy does for that policy). FSDP is meant for the GPT model (``--model
gpt``: the decoder of ``overhead.py``, 4 blocks, d_model 128, seq 64, batch 8 per process).

Both train the tiny MLP of ``overhead.py`` (batch 32 per process, AdamW, one thread per
process) on the same data, split between the two processes by a ``DistributedSampler``
without shuffling, so both should end at the same loss. Per-step time is measured on rank 0
after warm-up, as in ``overhead.py``. Variants:

  raw             torch.multiprocessing.spawn of 2 processes, init_process_group("gloo"),
                  DistributedDataParallel, DistributedSampler: the usual hand-written script
  fulmen_trainer  fulmen.Trainer(strategy="ddp", devices=2) with its defaults and
                  self.log("loss", prog_bar=True) every step; fulmen re-runs this script for rank 1
  fulmen_fabric   fulmen.Fabric(strategy="ddp", devices=2), the same loop as overhead.py

Every launch is a new pair of processes; launches are interleaved over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS = ["raw", "fulmen_trainer", "fulmen_fabric"]
GPT_SIZES = dict(vocab=512, seq=64, d_model=128, n_layer=4, n_head=4)


def _spec(args):
    from common import Spec

    if args.model == "gpt":
        return Spec(model="gpt", batch=8, steps=args.steps, warmup=args.warmup, **GPT_SIZES)
    return Spec(steps=args.steps, warmup=args.warmup)


def _raw_wrap(task, strategy: str):
    """The hand-written loop's parallel wrapper: DDP, or FSDP2 per block then the root."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(task)
    from torch.distributed.fsdp import fully_shard

    from common import Block

    for module in task.modules():
        if isinstance(module, Block):
            fully_shard(module)
    fully_shard(task)
    return task


def _fulmen_strategy(strategy: str):
    if strategy == "ddp":
        return "ddp"
    from fulmen_fsdp import FSDPStrategy

    from common import Block

    return FSDPStrategy(auto_wrap_policy={Block})


class _Sharded:
    """The dataset both variants see: ``total_steps`` batches per process, 2 processes."""

    @staticmethod
    def dataset(spec, world_size: int):
        from common import Spec

        bigger = Spec(**{**spec.__dict__, "batch": spec.batch * world_size})
        return bigger.dataset()


def _write(out: str, task) -> None:
    Path(out).write_text(json.dumps({"us_per_step": task.per_step_us(), "cpu_us_per_step": task.cpu_per_step_us(), "final_loss": float(task.last_loss)}))


# --------------------------------------------------------------------------- raw DDP


def _raw_worker(rank: int, world_size: int, port: int, args, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    spec = _spec(args)
    task = spec.build_task()
    model = _raw_wrap(task, args.strategy)
    optimizer = spec.optimizer(model.parameters())
    dataset = _Sharded.dataset(spec, world_size)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=spec.batch, sampler=sampler)
    for x, y in loader:
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if rank == 0:
        _write(out, task)
    # Leave together: a rank that tears gloo down while its peer still talks to it can be
    # aborted ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


def run_raw(args, out: str) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_raw_worker, args=(2, port, args, out), nprocs=2, join=True)


# --------------------------------------------------------------------------- fulmen


def _loader(spec, world_size: int):
    from torch.utils.data import DataLoader

    return DataLoader(_Sharded.dataset(spec, world_size), batch_size=spec.batch, shuffle=False)


def run_fulmen_trainer(args, out: str) -> None:
    import torch

    import fulmen
    from overhead import _fulmen_module

    torch.set_num_threads(1)
    spec = _spec(args)
    task = spec.build_task()
    module = _fulmen_module(spec, task, log=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = fulmen.Trainer(
            accelerator="cpu", strategy=_fulmen_strategy(args.strategy), devices=2, max_steps=spec.total_steps, max_epochs=1,
            default_root_dir=os.environ.get("BENCH_ROOT", tmp), enable_progress_bar=True,
        )
        trainer.fit(module, _loader(spec, 2))
        if trainer.global_rank == 0:
            _write(out, task)


def run_fulmen_fabric(args, out: str) -> None:
    import torch

    import fulmen

    torch.set_num_threads(1)
    spec = _spec(args)
    fabric = fulmen.Fabric(accelerator="cpu", strategy=_fulmen_strategy(args.strategy), devices=2)
    fabric.launch()
    task = spec.build_task()
    if args.strategy == "fsdp":  # sharding replaces the parameters: the optimizer comes after
        model = fabric.setup_module(task)
        optimizer = fabric.setup_optimizers(spec.optimizer(model.parameters()))
    else:
        model, optimizer = fabric.setup(task, spec.optimizer(task.parameters()))
    loader = fabric.setup_dataloaders(_loader(spec, 2))
    for x, y in loader:
        loss = model(x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if fabric.global_rank == 0:
        _write(out, task)


CHILDREN = {"raw": run_raw, "fulmen_trainer": run_fulmen_trainer, "fulmen_fabric": run_fulmen_fabric}


# --------------------------------------------------------------------------- parent


def launch(variant: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"ddp-{variant}-") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, out, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--strategy", args.strategy, "--model", args.model]
        start = time.perf_counter()
        env = {**os.environ, "BENCH_ROOT": tmp}
        for key in ("MASTER_PORT", "FULMEN_LAUNCHED", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
            env.pop(key, None)  # each launch picks its own rendezvous
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        result = json.loads(Path(out).read_text())
        result["launch_s"] = wall
        return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    p.add_argument("--model", choices=["mlp", "gpt"], default="mlp")
    p.add_argument("--json")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        variant, out = args.child
        CHILDREN[variant](args, out)
        return 0

    from common import fmt_ratio, machine, paired_ratios

    variants = list(dict.fromkeys(["raw"] + args.variants))
    runs: Dict[str, List[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            runs[v].append(launch(v, args))
        print(f"  round {r + 1}/{args.repeats}: " + "  ".join(f"{v}={runs[v][-1]['us_per_step']:.0f}µs" for v in variants))
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])), "variants": {}}
    raw_times = [x["us_per_step"] for x in runs["raw"]]
    print("| variant | wall µs/step on rank 0 (median) | ratio to raw (median of paired) | launch to exit s (median) | final loss |")
    print("|---|---:|---:|---:|---:|")
    for v in variants:
        times = [x["us_per_step"] for x in runs[v]]
        entry = {
            "runs": runs[v],
            "median_us": statistics.median(times),
            "ratio_to_raw": statistics.median(paired_ratios(times, raw_times)),
            "median_launch_s": statistics.median(x["launch_s"] for x in runs[v]),
            "final_losses": [x["final_loss"] for x in runs[v]],
        }
        result["variants"][v] = entry
        print(f"| {v} | {entry['median_us']:.1f} | {fmt_ratio(entry['ratio_to_raw'])} | {entry['median_launch_s']:.1f} | {entry['final_losses'][-1]:.5f} |")
    ref = round(result["variants"]["raw"]["final_losses"][-1], 5)
    bad = [v for v, e in result["variants"].items() if any(round(x, 5) != ref for x in e["final_losses"])]
    print("final losses agree to 5 decimals" if not bad else f"FINAL LOSSES DIFFER: {bad}")
    result["loss_mismatch"] = bad
    result["machine"] = machine()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
