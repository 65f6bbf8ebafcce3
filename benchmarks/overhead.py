"""Per-step time of the same training run under a raw PyTorch loop, fulmen and Lightning.

    python benchmarks/overhead.py                      # tiny MLP, 2000 steps, 7 rounds
    python benchmarks/overhead.py --model gpt --steps 20 --warmup 3 --repeats 5
    python benchmarks/overhead.py --variants raw fulmen_fabric --json out.json

Every variant trains the same model from the same initial weights on the same batches in the
same order with AdamW, and prints its final loss: all of them must agree (to 5 decimals on
the CPU), which shows they did the same work. Per-step time is measured from the start of
step ``warmup`` to the start of step ``warmup + steps`` (see ``common.Task``), so setup,
warm-up and end-of-training work (the final checkpoint) are excluded, and everything a
framework does per step (data movement, hooks, ``self.log``, the progress bar, a log row
every 50 steps) is included. On the CPU the window is cut into 20 chunks and a run's figure
is the median chunk's mean step time (robust to bursts of other processes on a shared
machine); the plain window mean and the thread's CPU time per step are recorded too.

Runs are interleaved: each round runs every variant once, in an order rotated by one from
round to round, so slow drift in a shared machine's load hits all variants alike. Reported:
the median per-step time of each variant over the rounds, and the median over rounds of its
ratio to the raw loop of the same round.

Variants:
  raw                  hand-written loop: forward, backward, step, zero_grad
  fulmen_trainer       fulmen.Trainer defaults (progress bar, CSV logger, checkpointing,
                       model summary) and self.log("loss", prog_bar=True) every step
  fulmen_trainer_bare  the same with progress bar, logger, checkpointing, summary off; no self.log
  fulmen_fabric        fulmen.Fabric: setup, setup_dataloaders, backward
  fulmen_trainer_no_bar  (on request) fulmen_trainer without the progress bar
  lightning_trainer    Lightning Trainer defaults and self.log(prog_bar=True) every step
  lightning_bare       Lightning Trainer(barebones=True), no self.log
  lightning_fabric     lightning.Fabric, same loop as fulmen_fabric
Lightning variants are skipped when ``lightning`` is not importable.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import Spec, fmt_ratio, lightning_available, machine, median, paired_ratios, quiet_lightning  # noqa: E402

FULMEN_VARIANTS = ["raw", "fulmen_trainer", "fulmen_trainer_bare", "fulmen_fabric"]
LIGHTNING_VARIANTS = ["lightning_trainer", "lightning_bare", "lightning_fabric"]
ALL_VARIANTS = FULMEN_VARIANTS + LIGHTNING_VARIANTS
EXTRA_VARIANTS = ["fulmen_trainer_no_bar"]  # for attribution, on request only


# --------------------------------------------------------------------------- variants


def _autocast(spec: Spec):
    if spec.precision == "bf16-mixed":
        return torch.autocast(torch.device(spec.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_raw(spec: Spec, tmp: str):
    task = spec.build_task()
    optimizer = spec.optimizer(task.parameters())
    device = torch.device(spec.device)
    on_cpu = device.type == "cpu"
    amp = spec.precision == "bf16-mixed"
    for x, y in spec.loader():
        if not on_cpu:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if amp:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = task(x, y)
        else:
            loss = task(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return task


def _accelerator(spec: Spec) -> str:
    return torch.device(spec.device).type


def _fulmen_module(spec: Spec, task, log: bool):
    import fulmen

    class BenchModule(fulmen.Module):
        def __init__(self) -> None:
            super().__init__()
            self.task = task

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.task(x, y)
            if log:
                self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return spec.optimizer(self.parameters())

    return BenchModule()


def run_fulmen_trainer(spec: Spec, tmp: str, bare: bool = False, progress_bar: bool = True):
    import fulmen

    task = spec.build_task()
    module = _fulmen_module(spec, task, log=not bare)
    kwargs = dict(enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False) if bare else {}
    if not progress_bar:
        kwargs["enable_progress_bar"] = False
    trainer = fulmen.Trainer(
        accelerator=_accelerator(spec), devices=1, precision=spec.precision,
        max_steps=spec.total_steps, max_epochs=1, default_root_dir=tmp, **kwargs,
    )
    trainer.fit(module, spec.loader())
    return task


def run_fulmen_fabric(spec: Spec, tmp: str):
    import fulmen

    fabric = fulmen.Fabric(accelerator=_accelerator(spec), devices=1, precision=spec.precision)
    task = spec.build_task()
    optimizer = spec.optimizer(task.parameters())
    model, optimizer = fabric.setup(task, optimizer)
    loader = fabric.setup_dataloaders(spec.loader())
    for x, y in loader:
        loss = model(x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return task


def _lightning_module(spec: Spec, task, log: bool):
    import lightning as L

    class BenchLightningModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.task = task

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.task(x, y)
            if log:
                self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return spec.optimizer(self.parameters())

    return BenchLightningModule()


def run_lightning_trainer(spec: Spec, tmp: str, bare: bool = False):
    import lightning as L

    task = spec.build_task()
    module = _lightning_module(spec, task, log=not bare)
    trainer = L.Trainer(
        accelerator=_accelerator(spec), devices=1, precision=spec.precision,
        max_steps=spec.total_steps, max_epochs=1, default_root_dir=tmp, barebones=bare,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, spec.loader())
    return task


def run_lightning_fabric(spec: Spec, tmp: str):
    import lightning as L

    fabric = L.Fabric(accelerator=_accelerator(spec), devices=1, precision=spec.precision)
    task = spec.build_task()
    optimizer = spec.optimizer(task.parameters())
    model, optimizer = fabric.setup(task, optimizer)
    loader = fabric.setup_dataloaders(spec.loader())
    for x, y in loader:
        loss = model(x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return task


RUNNERS: Dict[str, Callable] = {
    "raw": run_raw,
    "fulmen_trainer": run_fulmen_trainer,
    "fulmen_trainer_bare": lambda spec, tmp: run_fulmen_trainer(spec, tmp, bare=True),
    "fulmen_trainer_no_bar": lambda spec, tmp: run_fulmen_trainer(spec, tmp, progress_bar=False),
    "fulmen_fabric": run_fulmen_fabric,
    "lightning_trainer": run_lightning_trainer,
    "lightning_bare": lambda spec, tmp: run_lightning_trainer(spec, tmp, bare=True),
    "lightning_fabric": run_lightning_fabric,
}


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _silenced(enabled: bool):
    """Progress bars and summaries go to /dev/null (both frameworks alike) unless --verbose."""
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def run_one(variant: str, spec: Spec, quiet: bool = True) -> Tuple[float, float, float, float]:
    """(wall µs per step: median of chunks, CPU µs per step, final loss, wall µs per step:
    mean over the window) of one run of ``variant``."""
    gc.collect()
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as tmp, _silenced(quiet):
        task = RUNNERS[variant](spec, tmp)
    return task.per_step_us(), task.cpu_per_step_us(), float(task.last_loss), task.window_us()


def available_variants(requested: List[str]) -> Tuple[List[str], List[str]]:
    have_lightning = lightning_available()
    run, skipped = [], []
    for v in requested:
        (skipped if v in LIGHTNING_VARIANTS and not have_lightning else run).append(v)
    if have_lightning and any(v in LIGHTNING_VARIANTS for v in run):
        quiet_lightning()
    return run, skipped


def benchmark(spec: Spec, variants: List[str], repeats: int, quiet: bool = True, log: Callable[[str], None] = print) -> dict:
    """Interleaved rounds; returns per-variant times, losses, medians and ratios to raw."""
    if "raw" not in variants:
        variants = ["raw"] + variants
    # A short untimed pass of each variant first: imports, plugin discovery, allocator.
    warm = Spec(**{**spec.__dict__, "warmup": 2, "steps": 10})
    for v in variants:
        run_one(v, warm, quiet)
    times: Dict[str, List[float]] = {v: [] for v in variants}
    cpu: Dict[str, List[float]] = {v: [] for v in variants}
    window: Dict[str, List[float]] = {v: [] for v in variants}
    losses: Dict[str, List[float]] = {v: [] for v in variants}
    for r in range(repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            us, cpu_us, loss, window_us = run_one(v, spec, quiet)
            times[v].append(us)
            cpu[v].append(cpu_us)
            window[v].append(window_us)
            losses[v].append(loss)
        log(f"  round {r + 1}/{repeats}: " + "  ".join(f"{v}={times[v][-1]:.0f}" for v in variants))
    result = {"spec": spec.__dict__, "variants": {}}
    for v in variants:
        ratios = paired_ratios(times[v], times["raw"])
        cpu_ratios = paired_ratios(cpu[v], cpu["raw"])
        result["variants"][v] = {
            "us_per_step": times[v],
            "median_us": median(times[v]),
            "min_us": min(times[v]),
            "ratio_to_raw": median(ratios),
            "ratios": ratios,
            "cpu_us_per_step": cpu[v],
            "median_cpu_us": median(cpu[v]),
            "cpu_ratio_to_raw": median(cpu_ratios),
            "window_us_per_step": window[v],
            "window_ratio_to_raw": median(paired_ratios(window[v], window["raw"])),
            "final_losses": losses[v],
        }
    return result


def table(result: dict) -> str:
    rows = [
        "| variant | wall µs/step (median) | ratio to raw (wall) | CPU µs/step (median) | ratio to raw (CPU) | final loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v, r in result["variants"].items():
        loss = r["final_losses"][-1]
        rows.append(
            f"| {v} | {r['median_us']:.1f} | {fmt_ratio(r['ratio_to_raw'])} | {r['median_cpu_us']:.1f} "
            f"| {fmt_ratio(r['cpu_ratio_to_raw'])} | {loss:.5f} |"
        )
    return "\n".join(rows)


def check_losses(result: dict, places: int = 5) -> List[str]:
    """Variants whose final loss differs from raw's at ``places`` decimals."""
    ref = round(result["variants"]["raw"]["final_losses"][-1], places)
    return [v for v, r in result["variants"].items() if any(round(x, places) != ref for x in r["final_losses"])]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "gpt"], default="mlp")
    p.add_argument("--variants", nargs="+", default=ALL_VARIANTS, choices=ALL_VARIANTS + EXTRA_VARIANTS)
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (mlp 2000, gpt 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before (mlp 100, gpt 3)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--batch", type=int, default=None, help="mlp 32, gpt 8")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--compile", action="store_true", help="torch.compile the network (all variants)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", help="write all numbers here")
    p.add_argument("--verbose", action="store_true", help="show progress bars and framework output")
    return p.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> Spec:
    gpt = args.model == "gpt"
    return Spec(
        model=args.model,
        batch=args.batch or (8 if gpt else 32),
        warmup=args.warmup if args.warmup is not None else (3 if gpt else 100),
        steps=args.steps or (20 if gpt else 2000),
        vocab=args.vocab, seq=args.seq, d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
        device=args.device, precision=args.precision, compile=args.compile,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    variants, skipped = available_variants(args.variants)
    if skipped:
        print(f"lightning is not importable: skipping {', '.join(skipped)}")
    print(f"model={spec.model} batch={spec.batch} steps={spec.steps} warmup={spec.warmup} rounds={args.repeats} "
          f"threads={torch.get_num_threads()} device={spec.device} precision={spec.precision} compile={spec.compile}")
    start = time.perf_counter()
    result = benchmark(spec, variants, args.repeats, quiet=not args.verbose)
    result["machine"] = machine()
    result["command"] = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    result["wall_s"] = time.perf_counter() - start
    print(table(result))
    bad = check_losses(result)
    result["loss_mismatch"] = bad
    print("final losses agree to 5 decimals" if not bad else f"FINAL LOSSES DIFFER: {bad}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
