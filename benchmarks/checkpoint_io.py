"""What fulmen's safe checkpoint file costs against a plain ``torch.save`` / ``torch.load``.

    python benchmarks/checkpoint_io.py [--mb 200] [--repeats 7] [--dir DIR] [--json out.json]

The state is what a Trainer checkpoint of an Adam-trained model holds (weights and Adam's two
moments: about three times ``--mb`` of fp32 tensors, in a few dozen tensors, plus the loop's
small entries). Variants, interleaved round by round, each writing a new file in ``--dir``:

  save:
    torch_save         ``torch.save(state, path)``: what Lightning's default CheckpointIO does
    torch_save_fsync   the same, then ``fsync``: a plain save that survives a power cut
    fulmen             ``TorchCheckpointIO().save_checkpoint``: a temporary file, the SHA-256
                       footer, fsync, atomic rename, fsync of the directory
  load:
    torch_load         ``torch.load(path, weights_only=True)``
    fulmen             ``TorchCheckpointIO().load_checkpoint``: footer check, then the same load

Between saves the page cache is left as it is (what a training job sees); each load reads a
file written in the same round. Reported: medians over rounds and each variant's median
ratio to the plain call of the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402


def make_state(mb: int) -> Dict:
    """Weights plus two Adam moments of ``mb`` MB each, in 16 tensors apiece."""
    g = torch.Generator().manual_seed(0)
    numel = mb * (1 << 20) // 4 // 16
    weights = {f"layer{i}.weight": torch.randn(numel, generator=g) for i in range(16)}
    optimizer = {"state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.randn(numel, generator=g),
                               "exp_avg_sq": torch.rand(numel, generator=g)} for i in range(16)},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": list(range(16))}]}
    return {"state_dict": weights, "optimizer_states": [optimizer], "epoch": 3, "global_step": 1000,
            "loops": {"fit_loop": {"batch_idx": 17}}}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _torch_save_fsync(state, path: str) -> None:
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def run(args) -> Dict:
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    io = TorchCheckpointIO()
    state = make_state(args.mb)
    directory = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-io-"))
    directory.mkdir(parents=True, exist_ok=True)
    saves = {"torch_save": lambda p: torch.save(state, p), "torch_save_fsync": lambda p: _torch_save_fsync(state, p),
             "fulmen": lambda p: io.save_checkpoint(state, p)}
    loads = {"torch_load": lambda p: torch.load(p, map_location="cpu", weights_only=True),
             "fulmen": lambda p: io.load_checkpoint(p)}
    times: Dict[str, Dict[str, List[float]]] = {"save": {k: [] for k in saves}, "load": {k: [] for k in loads}}
    size = 0
    for r in range(args.repeats):
        names = list(saves)
        for name in names[r % len(names):] + names[: r % len(names)]:
            path = directory / f"{name}.ckpt"
            if path.exists():
                path.unlink()
            times["save"][name].append(_timed(lambda: saves[name](str(path))))
        size = (directory / "fulmen.ckpt").stat().st_size
        sources = {"torch_load": directory / "torch_save.ckpt", "fulmen": directory / "fulmen.ckpt"}
        names = list(loads)
        for name in names[r % len(names):] + names[: r % len(names)]:
            times["load"][name].append(_timed(lambda: loads[name](str(sources[name]))))
        print(f"  round {r + 1}/{args.repeats}: " + "  ".join(f"{kind}.{k}={v[-1]:.3f}s" for kind, d in times.items() for k, v in d.items()))
    for path in directory.glob("*.ckpt"):
        path.unlink()
    base = {"save": "torch_save", "load": "torch_load"}
    summary = {}
    for kind, per in times.items():
        for name, values in per.items():
            ratios = [v / b for v, b in zip(values, per[base[kind]])]
            summary[f"{kind}.{name}"] = {"median_s": statistics.median(values), "ratio": statistics.median(ratios)}
    return {"file_bytes": size, "times": times, "summary": summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=200, help="MB of fp32 weights (the file holds about 3x)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dir", help="where the files go (default: a new temporary directory)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = run(args)
    print(f"file: {result['file_bytes'] / 1e6:.0f} MB")
    print("| call | median s | ratio to plain torch (median of paired) |")
    print("|---|---:|---:|")
    for name, entry in result["summary"].items():
        print(f"| {name} | {entry['median_s']:.3f} | {entry['ratio']:.3f}× |")
    if args.json:
        from common import machine

        result["machine"] = machine()
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
