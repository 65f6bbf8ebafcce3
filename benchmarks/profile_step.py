"""Where a framework's per-step time goes, beyond the work every variant does.

    python benchmarks/profile_step.py [--variant fulmen_trainer] [--steps 15000] [--rate 2000] [--depth 3]

Runs one variant of ``overhead.py`` (tiny MLP) under py-spy (sampling, low overhead) and
splits the samples of the training loop in two: "work" — the model's forward and loss, the
backward pass, the optimizer's update, ``zero_grad`` and the DataLoader producing a batch,
which the raw loop does too — and the rest, the framework's own per-step cost. The rest is
listed by call path (``--depth`` frames below the loop), as a percentage of the loop's
samples. py-spy must be installed (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Frames of the work every variant does; samples under them are not overhead.
WORK = re.compile(
    r"training_step \(overhead|Task\.forward|Adam\.step|AdamW\.step|Optimizer\.profile_hook_step"
    # (_disable_dynamo: the wrapper torch puts around zero_grad)
    r"|_engine_run_backward|backward \(torch/autograd/__init__|Optimizer\.zero_grad|_disable_dynamo|_BaseDataLoaderIter\.__next__"
)


def child(variant: str, steps: int) -> None:
    sys.path.insert(0, str(HERE))
    import torch

    torch.set_num_threads(1)
    import overhead
    from common import Spec

    overhead.run_one(variant, Spec(steps=10, warmup=2))
    overhead.run_one(variant, Spec(steps=steps, warmup=10))


def _loop_start(frames):
    for i, f in enumerate(frames):
        if "run_training_epoch" in f or "advance (lightning" in f or re.search(r"run_(raw|fulmen_fabric|lightning_fabric) \(", f):
            return i
    return None


def attribute(raw_file: str, depth: int):
    paths = collections.Counter()
    total = work = 0
    for line in open(raw_file):
        stack, _, count = line.rstrip().rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = stack.split(";")
        start = _loop_start(frames)
        if start is None:
            continue
        total += n
        below = frames[start:]
        if any(WORK.search(f) for f in below):
            work += n
            continue
        key = " > ".join(re.sub(r"\s*\(.*?\)", "", f) for f in below[1 : 1 + depth]) or "(the loop's own lines)"
        paths[key] += n
    return total, work, paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="fulmen_trainer")
    p.add_argument("--steps", type=int, default=15000)
    p.add_argument("--rate", type=int, default=2000, help="samples per second")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.variant, args.steps)
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        print("py-spy is not installed: pip install py-spy")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "samples.txt")
        subprocess.run(
            [spy, "record", "-r", str(args.rate), "-f", "raw", "-o", raw, "--", sys.executable, __file__,
             "--child", "--variant", args.variant, "--steps", str(args.steps)],
            check=True, capture_output=True,
        )
        total, work, paths = attribute(raw, args.depth)
    if not total:
        print("no samples inside the training loop")
        return 1
    print(f"{args.variant}: {total} samples in the loop; work {100 * work / total:.1f}%, the rest {100 * (total - work) / total:.1f}%")
    for key, n in paths.most_common(args.top):
        print(f"{100 * n / total:6.2f}%  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
