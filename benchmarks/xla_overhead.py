"""torch-xla on its PJRT CPU device: fulmen's Trainer and Fabric against a hand-written loop.

    PJRT_DEVICE=CPU python benchmarks/xla_overhead.py [--repeats 5] [--steps 500] [--warmup 30]
                                                      [--model mlp|gpt] [--json out.json]

Needs torch 2.9.0 and torch-xla 2.9.0 (the ``nox -s xla`` environment). Every run is a fresh
process (an XLA process keeps its compiled graphs), runs are interleaved round by round and
the figures are medians over rounds; the ratio is the median of each round's variant/raw.
Per-step time comes from ``common.Task``'s clock (median over chunks of the window after
warm-up). On XLA the clock reads happen while the step is traced and the previous graph may
still run, so a window of many steps is what counts, not one step. Besides time, each run
reports from torch-xla's metrics how many graphs it compiled (in all, and inside the timed
window: a loop that recompiles shows there) and how many graph executions and
device-to-host transfers one step costs. Variants:

  raw             model.to(torch_xla.device()), AdamW, MpDeviceLoader over the DataLoader;
                  loss.backward(); optimizer.step(); optimizer.zero_grad(); torch_xla.sync()
  fulmen_trainer  fulmen.Trainer(accelerator="xla", devices=1) with its defaults (progress
                  bar, CSV logger, a checkpoint after the window) and self.log("loss",
                  prog_bar=True) every step
  fulmen_fabric   fulmen.Fabric(accelerator="xla", devices=1): setup, setup_dataloaders,
                  fabric.backward, optimizer.step/zero_grad

All train the same network from the same weights on the same batches, so they end at the
same loss.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _spec(args):
    from common import Spec

    if args.model == "gpt":
        return Spec(model="gpt", batch=8, seq=32, d_model=64, n_layer=2, n_head=4, vocab=256,
                    steps=args.steps, warmup=args.warmup)
    return Spec(steps=args.steps, warmup=args.warmup)


class _Metrics:
    """torch-xla's counters, read at the window's start (first forward after warm-up)."""

    NAMES = ("CompileTime", "ExecuteTime", "TransferFromDeviceTime")

    def __init__(self) -> None:
        self.at_start: Dict[str, int] = {}

    @staticmethod
    def now() -> Dict[str, int]:
        import torch_xla.debug.metrics as met

        counts = {}
        for name in _Metrics.NAMES:
            data = met.metric_data(name)
            counts[name] = int(data[0]) if data else 0
        return counts


def _watch_window(task, metrics: _Metrics) -> None:
    """Wrap the task's forward so the counters are read when the clock starts."""
    forward = task.forward

    def counted(x, y):
        if task.calls == task.start_at:
            metrics.at_start = _Metrics.now()
        return forward(x, y)

    task.forward = counted


def _write(out: str, task, metrics: _Metrics) -> None:
    end = _Metrics.now()
    steps = task.stop_at - task.start_at
    window = {name: end[name] - metrics.at_start.get(name, 0) for name in _Metrics.NAMES}
    Path(out).write_text(json.dumps({
        "us_per_step": task.per_step_us(), "cpu_us_per_step": task.cpu_per_step_us(),
        "final_loss": float(task.last_loss),
        "compiles_total": end["CompileTime"], "compiles_in_window": window["CompileTime"],
        "executions_per_step": window["ExecuteTime"] / steps,
        "host_reads_per_step": window["TransferFromDeviceTime"] / steps,
    }))


def run_raw(args, out: str) -> None:
    import torch
    import torch_xla
    from torch_xla.distributed.parallel_loader import MpDeviceLoader

    torch.set_num_threads(1)
    spec = _spec(args)
    device = torch_xla.device()
    task = spec.build_task().to(device)
    metrics = _Metrics()
    _watch_window(task, metrics)
    optimizer = spec.optimizer(task.parameters())
    for x, y in MpDeviceLoader(spec.loader(), device):
        loss = task(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        torch_xla.sync()
    _write(out, task, metrics)


def run_fulmen_trainer(args, out: str) -> None:
    import torch

    import fulmen
    from overhead import _fulmen_module

    torch.set_num_threads(1)
    spec = _spec(args)
    task = spec.build_task()
    metrics = _Metrics()
    _watch_window(task, metrics)
    module = _fulmen_module(spec, task, log=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = fulmen.Trainer(accelerator="xla", devices=1, max_steps=spec.total_steps, max_epochs=1,
                                 default_root_dir=tmp, enable_progress_bar=True)
        trainer.fit(module, spec.loader())
    _write(out, task, metrics)


def run_fulmen_fabric(args, out: str) -> None:
    import torch

    import fulmen

    torch.set_num_threads(1)
    spec = _spec(args)
    fabric = fulmen.Fabric(accelerator="xla", devices=1)
    task = spec.build_task()
    metrics = _Metrics()
    _watch_window(task, metrics)
    optimizer = spec.optimizer(task.parameters())
    model, optimizer = fabric.setup(task, optimizer)
    for x, y in fabric.setup_dataloaders(spec.loader()):
        loss = model(x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    _write(out, task, metrics)


CHILDREN = {"raw": run_raw, "fulmen_trainer": run_fulmen_trainer, "fulmen_fabric": run_fulmen_fabric}


def launch(variant: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"xla-{variant}-") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, out, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--model", args.model]
        env = {**os.environ, "PJRT_DEVICE": os.environ.get("PJRT_DEVICE", "CPU"), "OMP_NUM_THREADS": "1",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        result = json.loads(Path(out).read_text())
        result["launch_s"] = wall
        return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--model", choices=["mlp", "gpt"], default="mlp")
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
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
        print(f"  round {r + 1}/{args.repeats}: " + "  ".join(f"{v}={runs[v][-1]['us_per_step']:.0f}µs" for v in variants),
              flush=True)
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
              "variants": {}}
    raw_times = [x["us_per_step"] for x in runs["raw"]]
    raw_cpu = [x["cpu_us_per_step"] for x in runs["raw"]]
    print("| variant | wall µs/step | ratio | CPU µs/step | CPU ratio | compiles (in window) | executions/step "
          "| host reads/step | launch→exit s | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        times = [x["us_per_step"] for x in runs[v]]
        cpu = [x["cpu_us_per_step"] for x in runs[v]]
        entry = {
            "runs": runs[v],
            "median_us": statistics.median(times),
            "ratio_to_raw": statistics.median(paired_ratios(times, raw_times)),
            "median_cpu_us": statistics.median(cpu),
            "cpu_ratio_to_raw": statistics.median(paired_ratios(cpu, raw_cpu)),
            "median_launch_s": statistics.median(x["launch_s"] for x in runs[v]),
            "final_losses": [x["final_loss"] for x in runs[v]],
        }
        last = runs[v][-1]
        result["variants"][v] = entry
        print(f"| {v} | {entry['median_us']:.1f} | {fmt_ratio(entry['ratio_to_raw'])} | {entry['median_cpu_us']:.1f} "
              f"| {fmt_ratio(entry['cpu_ratio_to_raw'])} | {last['compiles_total']} ({last['compiles_in_window']}) "
              f"| {last['executions_per_step']:.2f} | {last['host_reads_per_step']:.3f} | {entry['median_launch_s']:.1f} "
              f"| {entry['final_losses'][-1]:.5f} |")
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
