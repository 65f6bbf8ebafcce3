"""DeepSpeed ZeRO on 2 CPU processes (gloo): fulmen ``strategy="deepspeed_stage_2"`` and
``"deepspeed_stage_3"`` (Trainer and Fabric) against a hand-written ``deepspeed.initialize`` loop.

    python benchmarks/deepspeed_overhead.py [--stages 2 3] [--repeats 7] [--steps 500] [--warmup 30]
                                            [--model gpt ...] [--json out.json]

Same structure as ``ddp.py``: every run is a fresh pair of processes, per-step time is
measured on rank 0 by ``common.Task``'s clock (median of 20 chunks of the window after
warm-up), runs are interleaved round by round (every (stage, variant) once per round, the
order rotated by one each round) and the figure is the median over rounds, the ratio the
median of each round's variant/raw. Every variant trains the same network from the same
weights on the same batches (``ddp._Sharded``: each process its half of the data, no
shuffling) with the same client optimizer (torch AdamW, not DeepSpeed's FusedAdam, which
JIT-compiles for ~95 s), so within a stage all must end at the same loss. Variants:

  raw             torch.multiprocessing.spawn of the processes, deepspeed.init_distributed,
                  deepspeed.initialize(model, optimizer=AdamW, config) with the config fulmen
                  builds (micro-batch B, accumulation 1, ZeRO stage S, clipping 0.0, the
                  untested-optimizer switch), DistributedSampler; loss = engine(x, y);
                  engine.backward(loss); engine.step()
  fulmen_trainer  fulmen.Trainer(strategy="deepspeed_stage_S", devices=2) with its defaults
                  (progress bar, CSV logger, checkpointing: one ZeRO checkpoint directory at
                  the end, after the timed window) and self.log("loss", prog_bar=True) every
                  step, as in ``ddp.py``
  fulmen_fabric   fulmen.Fabric(strategy="deepspeed_stage_S", devices=2): fabric.setup(model,
                  optimizer), setup_dataloaders, fabric.backward, optimizer.step/zero_grad

The default model is the tiny MLP of ``overhead.py`` and ``ddp.py`` (64 -> 64 -> 10, batch 32
per process): its own math is a few µs, but a DeepSpeed step on it is still ~10 ms (ZeRO-2)
to ~20 ms (ZeRO-3) of DeepSpeed's per-step Python (gradient hooks and buckets, flattening,
the norm, the gloo collectives), the floor of any DeepSpeed loop; a framework's per-step
cost (a few hundred µs in ``ddp.py``) is then a few percent, visible against the 3% goal.
A heavier model only adds compute to both sides: the GPT-style decoder ``--model gpt``
(2 layers, d_model 64, seq 32, batch 8, vocab 256) takes ~13 ms of math per step on one
core and ~38 ms under ZeRO-2. ``--device cuda --devices 1 --precision bf16-mixed --model
gpt`` is what ``gpu.py``'s DeepSpeed part runs.
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
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS = ["raw", "fulmen_trainer", "fulmen_fabric"]
LAUNCH_TIMEOUT = 900


def deepspeed_available() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("deepspeed")
    return spec is not None and spec.origin is not None  # not a namespace folder named deepspeed


def _spec(args):
    from overhead import spec_from_args

    args.compile = False
    return spec_from_args(args)


def ds_config(args) -> Dict[str, Any]:
    """What fulmen's strategy passes to ``deepspeed.initialize`` for a Trainer with
    accumulate_grad_batches=1 and no clipping; the raw loop uses exactly this."""
    config: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": _spec(args).batch,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": args.stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
    }
    if args.precision.startswith("bf16"):
        config["bf16"] = {"enabled": True}
    return config


def _finish(out: str, task, config) -> None:
    from ddp import _write

    _write(out, task)
    result = json.loads(Path(out).read_text())
    result["config"] = config
    Path(out).write_text(json.dumps(result, default=str))


def _accelerator(args) -> str:
    return "cuda" if args.device.startswith("cuda") else "cpu"


# --------------------------------------------------------------------------- raw DeepSpeed


def _raw_worker(rank: int, world_size: int, port: int, args, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from ddp import _Sharded

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = _accelerator(args) == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    spec = _spec(args)
    if cuda:
        spec.device = f"cuda:{rank}"
    task = spec.build_task()
    optimizer = spec.optimizer(task.parameters())
    config = ds_config(args)
    engine, *_ = deepspeed.initialize(model=task, optimizer=optimizer, config=config)
    dataset = _Sharded.dataset(spec, world_size)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=spec.batch, sampler=sampler)
    device = engine.device
    for x, y in loader:
        if cuda:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
    if rank == 0:
        _finish(out, task, config)
    dist.barrier()  # leave together (see ddp.py)
    engine.destroy()
    dist.destroy_process_group()


def run_raw(args, out: str) -> None:
    import torch.multiprocessing as mp

    from fulmen.strategies.launchers.guards import free_port

    mp.spawn(_raw_worker, args=(args.devices, free_port(), args, out), nprocs=args.devices, join=True)


# --------------------------------------------------------------------------- fulmen


def run_fulmen_trainer(args, out: str) -> None:
    import torch

    import fulmen
    from ddp import _loader
    from overhead import _fulmen_module

    torch.set_num_threads(1)
    spec = _spec(args)
    task = spec.build_task()
    module = _fulmen_module(spec, task, log=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = fulmen.Trainer(
            accelerator=_accelerator(args), strategy=f"deepspeed_stage_{args.stage}", devices=args.devices,
            precision=args.precision, max_steps=spec.total_steps, max_epochs=1,
            default_root_dir=os.environ.get("BENCH_ROOT", tmp), enable_progress_bar=True,
        )
        trainer.fit(module, _loader(spec, args.devices))
        if trainer.global_rank == 0:
            _finish(out, task, trainer.strategy.effective_config)


def run_fulmen_fabric(args, out: str) -> None:
    import torch

    import fulmen
    from ddp import _loader

    torch.set_num_threads(1)
    spec = _spec(args)
    fabric = fulmen.Fabric(accelerator=_accelerator(args), strategy=f"deepspeed_stage_{args.stage}",
                           devices=args.devices, precision=args.precision)
    fabric.launch()
    if spec.device.startswith("cuda"):
        spec.device = str(fabric.device)
    task = spec.build_task()
    optimizer = spec.optimizer(task.parameters())
    model, optimizer = fabric.setup(task, optimizer)
    loader = fabric.setup_dataloaders(_loader(spec, args.devices))
    for x, y in loader:
        loss = model(x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    if fabric.global_rank == 0:
        _finish(out, task, fabric.strategy.effective_config)


CHILDREN = {"raw": run_raw, "fulmen_trainer": run_fulmen_trainer, "fulmen_fabric": run_fulmen_fabric}


# --------------------------------------------------------------------------- parent

# What a child needs of the parent's arguments (the rest is the parent's business).
CHILD_OPTIONS = ["steps", "warmup", "model", "batch", "vocab", "seq", "d_model", "n_layer", "n_head",
                 "device", "devices", "precision"]


def launch(variant: str, stage: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"deepspeed-{variant}-{stage}-") as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, out, "--stage", str(stage)]
        for name in CHILD_OPTIONS:
            value = getattr(args, name)
            if value is not None:
                command += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "BENCH_ROOT": tmp, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")
        # deepspeed_shm_comm_op (CPU) is JIT-built once into this cache, as the tests do.
        env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "fulmen-deepspeed-extensions"))
        for key in ("MASTER_PORT", "MASTER_ADDR", "FULMEN_LAUNCHED", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
            env.pop(key, None)  # each launch picks its own rendezvous
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=LAUNCH_TIMEOUT)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{variant} stage {stage} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
        result = json.loads(Path(out).read_text())
        result["launch_s"] = wall
        return result


def run(args, log=print) -> dict:
    """Interleaved rounds of every (stage, variant); returns runs, medians and ratios per stage.
    A launch that fails is recorded (``error``) and the rounds go on."""
    variants = list(dict.fromkeys(["raw"] + args.variants))
    cells = [(s, v) for s in args.stages for v in variants]
    runs: Dict[tuple, List[dict]] = {c: [] for c in cells}
    start = time.perf_counter()
    for r in range(args.repeats):
        order = cells[r % len(cells):] + cells[: r % len(cells)]
        for stage, variant in order:
            try:
                runs[(stage, variant)].append(launch(variant, stage, args))
            except Exception as exc:  # noqa: BLE001 - recorded, the other cells still run
                runs[(stage, variant)].append({"error": f"{type(exc).__name__}: {exc}"[-4000:]})
        log(f"  round {r + 1}/{args.repeats}: " + "  ".join(
            f"s{s}:{v}=" + (f"{runs[(s, v)][-1]['us_per_step']:.0f}µs" if "us_per_step" in runs[(s, v)][-1] else "FAILED")
            for s, v in cells), flush=True)
    from common import paired_ratios

    result: Dict[str, Any] = {"stages": {}, "seconds": time.perf_counter() - start, "repeats": args.repeats,
                              "options": {k: getattr(args, k) for k in CHILD_OPTIONS}}
    for stage in args.stages:
        # Rounds in which raw failed give no ratio: pair by round, NaN for a failed run.
        raw_times = [x.get("us_per_step", float("nan")) for x in runs[(stage, "raw")]]
        entries = {}
        for v in variants:
            ok = [x for x in runs[(stage, v)] if "us_per_step" in x]
            times = [x.get("us_per_step", float("nan")) for x in runs[(stage, v)]]
            ratios = paired_ratios(times, raw_times)
            cpu_ratios = paired_ratios([x.get("cpu_us_per_step", float("nan")) for x in runs[(stage, v)]],
                                       [x.get("cpu_us_per_step", float("nan")) for x in runs[(stage, "raw")]])
            entries[v] = {
                "runs": runs[(stage, v)],
                "failed": len(runs[(stage, v)]) - len(ok),
                "errors": [x["error"] for x in runs[(stage, v)] if "error" in x],
                "median_us": statistics.median(x["us_per_step"] for x in ok) if ok else float("nan"),
                "median_cpu_us": statistics.median(x["cpu_us_per_step"] for x in ok) if ok else float("nan"),
                "ratio_to_raw": statistics.median(ratios) if ratios else float("nan"),
                "ratios": ratios,
                "cpu_ratio_to_raw": statistics.median(cpu_ratios) if cpu_ratios else float("nan"),
                "median_launch_s": statistics.median(x["launch_s"] for x in ok) if ok else float("nan"),
                "final_losses": [x["final_loss"] for x in ok],
                "config": ok[-1]["config"] if ok else None,
            }
        losses = [round(x, 5) for e in entries.values() for x in e["final_losses"]]
        entries_ok = all(not e["failed"] for e in entries.values())
        result["stages"][str(stage)] = {
            "variants": entries,
            "losses_agree": bool(losses) and len(set(losses)) == 1,
            "all_ran": entries_ok,
        }
    return result


def table(result: dict) -> str:
    from common import fmt_ratio

    rows = ["| stage | variant | wall µs/step rank 0 (median) | ratio to raw (median of paired) | CPU µs/step | ratio (CPU) "
            "| launch to exit s | final loss |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for stage, part in result["stages"].items():
        for v, e in part["variants"].items():
            if not e["final_losses"]:
                rows.append(f"| {stage} | {v} | failed: {e['errors'][-1].splitlines()[0][:200] if e['errors'] else '?'} | | | | | |")
                continue
            note = f" ({e['failed']} of {len(e['runs'])} failed)" if e["failed"] else ""
            rows.append(f"| {stage} | {v}{note} | {e['median_us']:.1f} | {fmt_ratio(e['ratio_to_raw'])} | {e['median_cpu_us']:.1f} "
                        f"| {fmt_ratio(e['cpu_ratio_to_raw'])} | {e['median_launch_s']:.1f} | {e['final_losses'][-1]:.5f} |")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", type=int, nargs="+", default=[2, 3], choices=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=500, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps before")
    p.add_argument("--model", choices=["mlp", "gpt"], default="mlp")
    p.add_argument("--batch", type=int, default=None, help="per process; mlp 32, gpt 8")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one process per GPU)")
    p.add_argument("--devices", type=int, default=2, help="processes")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--json")
    p.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        variant, out = args.child
        CHILDREN[variant](args, out)
        return 0
    if not deepspeed_available():
        print("deepspeed is not installed: DS_BUILD_OPS=0 pip install deepspeed")
        return 2
    from common import machine
    from importlib import metadata

    spec = _spec(args)
    print(f"model={spec.model} batch={spec.batch} steps={spec.steps} warmup={spec.warmup} rounds={args.repeats} "
          f"stages={args.stages} devices={args.devices} device={args.device} precision={args.precision}", flush=True)
    result = run(args)
    result["command"] = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    result["machine"] = {**machine(), "deepspeed": metadata.version("deepspeed")}
    print(table(result))
    bad = [s for s, part in result["stages"].items() if not (part["losses_agree"] and part["all_ran"])]
    print("every run finished and final losses agree to 5 decimals within each stage" if not bad
          else f"FAILED RUNS OR FINAL LOSSES DIFFER in stage(s) {bad}")
    print(f"{result['seconds']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
