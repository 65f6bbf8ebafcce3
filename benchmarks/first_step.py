"""Time from process start to the first optimizer step: raw loop, fulmen, Lightning.

    python benchmarks/first_step.py [--repeats 5] [--json out.json]

Each variant runs in a fresh ``python`` process that trains the tiny MLP of
``overhead.py``. A post-hook on the torch optimizer records the wall clock at the end of
the first ``optimizer.step()`` and ends the process; the parent measures from just before it
started the process. This includes interpreter start, imports, building the model, the
framework's setup (plugin discovery, logger, callbacks, model summary) and one step.
Variants are interleaved over rounds; medians and the median difference to the raw loop of
the same round are reported.
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

VARIANTS = ["raw", "fulmen_trainer", "fulmen_fabric", "lightning_trainer", "lightning_fabric"]


def child(variant: str, out: str) -> None:
    """Runs in the measured process: train until the first optimizer step, then leave."""
    import torch

    torch.set_num_threads(1)
    import overhead
    from common import Spec

    def stamp(optimizer, args, kwargs):
        Path(out).write_text(repr(time.time()))
        os._exit(0)

    original = torch.optim.AdamW.__init__

    def init(self, *args, **kwargs):  # every variant builds its AdamW through Spec.optimizer
        original(self, *args, **kwargs)
        self.register_step_post_hook(stamp)

    torch.optim.AdamW.__init__ = init
    if variant.startswith("lightning"):
        from common import quiet_lightning

        quiet_lightning()
    spec = Spec(steps=5, warmup=0)
    with tempfile.TemporaryDirectory() as tmp:
        overhead.RUNNERS[variant](spec, tmp)
    raise SystemExit(f"{variant} finished without an optimizer step")


def measure(variant: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "t")
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--child", variant, out], capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return float(Path(out).read_text()) - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--json")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    from common import lightning_available, machine

    variants = [v for v in args.variants if lightning_available() or not v.startswith("lightning")]
    if "raw" not in variants:
        variants.insert(0, "raw")
    skipped = sorted(set(args.variants) - set(variants))
    if skipped:
        print(f"lightning is not importable: skipping {', '.join(skipped)}")
    measure("raw")  # warm the file cache, untimed
    times: Dict[str, List[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            times[v].append(measure(v))
        print(f"  round {r + 1}/{args.repeats}: " + "  ".join(f"{v}={times[v][-1]:.2f}s" for v in variants))
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])), "variants": {}}
    print("| variant | median s to first step | minus raw (median of paired) |")
    print("|---|---:|---:|")
    for v in variants:
        diffs = [t - b for t, b in zip(times[v], times["raw"])]
        entry = {"seconds": times[v], "median_s": statistics.median(times[v]), "minus_raw_s": statistics.median(diffs)}
        result["variants"][v] = entry
        print(f"| {v} | {entry['median_s']:.2f} | {entry['minus_raw_s']:+.2f} |")
    result["machine"] = machine()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
