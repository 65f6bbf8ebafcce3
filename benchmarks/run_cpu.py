"""All CPU benchmarks in one go (what ``nox -s benchmarks`` runs), in a few minutes.

    python benchmarks/run_cpu.py [--quick] [--only overhead_mlp overhead_gpt import first_step ddp]
                                 [--deps] [--out benchmarks/out]

Writes one JSON file per benchmark and ``cpu_results.md`` (tables and the targets) under
``--out``. ``--deps`` also measures what ``pip install`` adds (builds two virtualenvs, a
couple of minutes more). Lightning variants run when ``lightning`` is importable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ddp  # noqa: E402
import deps_size  # noqa: E402
import first_step  # noqa: E402
import import_time  # noqa: E402
import overhead  # noqa: E402
from common import fmt_ratio, machine  # noqa: E402

# The compute-bound model: a GPT-style decoder whose step takes tens of milliseconds on one
# core, so per-step framework overhead (tens of µs) should vanish in it.
GPT_ARGS = ["--model", "gpt", "--d-model", "128", "--n-layer", "4", "--n-head", "4", "--seq", "64", "--batch", "8", "--vocab", "512"]

TARGETS = {
    "trainer": ("fulmen Trainer (defaults, self.log every step, progress bar) within 10% of raw, tiny MLP", 1.10),
    "fabric": ("fulmen Fabric within 3% of raw, tiny MLP", 1.03),
    "compute_trainer": ("fulmen Trainer within 1% of raw, compute-bound model", 1.01),
    "compute_fabric": ("fulmen Fabric within 1% of raw, compute-bound model", 1.01),
    "import": ("`import torch, fulmen` within 0.15 s of `import torch`", 0.15),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds and steps (about half the time)")
    p.add_argument("--only", nargs="+", choices=["overhead_mlp", "overhead_gpt", "import", "first_step", "ddp"])
    p.add_argument("--deps", action="store_true", help="also measure install size (two fresh venvs)")
    p.add_argument("--out", default=str(HERE / "out"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    jobs = {
        "overhead_mlp": lambda: overhead.main(["--repeats", "3" if q else "7", "--steps", "1000" if q else "2000", "--json", str(out / "overhead_mlp.json")]),
        # Many short rounds: run-to-run noise (±2%) is what limits the resolution here.
        "overhead_gpt": lambda: overhead.main(GPT_ARGS + ["--repeats", "5" if q else "11", "--steps", "10", "--warmup", "2", "--json", str(out / "overhead_gpt.json")]),
        "import": lambda: import_time.main(["--repeats", "5" if q else "9", "--json", str(out / "import_time.json")]),
        "first_step": lambda: first_step.main(["--repeats", "3" if q else "5", "--json", str(out / "first_step.json")]),
        "ddp": lambda: ddp.main(["--repeats", "2" if q else "3", "--steps", "500" if q else "1000", "--json", str(out / "ddp.json")]),
    }
    if args.deps:
        jobs["deps"] = lambda: deps_size.main(["--json", str(out / "deps_size.json")])
    selected = args.only or list(jobs)
    if args.deps and "deps" not in selected:
        selected.append("deps")
    status = 0
    started = time.perf_counter()
    for name in selected:
        print(f"\n=== {name}", flush=True)
        t = time.perf_counter()
        status |= jobs[name]() or 0
        print(f"({name}: {time.perf_counter() - t:.0f} s)", flush=True)
    report = summary(out)
    (out / "cpu_results.md").write_text(report)
    print("\n" + report)
    print(f"all CPU benchmarks: {time.perf_counter() - started:.0f} s; results in {out}")
    return status


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def summary(out: Path) -> str:
    m = machine()
    lines = [
        "# CPU benchmark summary",
        "",
        f"{m.get('cpu', m['machine'])}, {m['cpus']} cores, Python {m['python']}, torch {m['torch']}, "
        f"fulmen {m['fulmen']}, Lightning {m['lightning'] or 'not installed'}; load average at the end {m.get('loadavg')}",
        "",
    ]
    checks = []
    mlp = _load(out / "overhead_mlp.json")
    if mlp:
        lines += ["## Tiny MLP (overhead-bound)", "", f"`{mlp['command']}`", "", overhead.table(mlp), ""]
        v = mlp["variants"]
        checks.append(("trainer", v["fulmen_trainer"]["ratio_to_raw"]))
        checks.append(("fabric", v["fulmen_fabric"]["ratio_to_raw"]))
    gpt = _load(out / "overhead_gpt.json")
    if gpt:
        lines += ["## GPT-style decoder (compute-bound)", "", f"`{gpt['command']}`", "", overhead.table(gpt), ""]
        v = gpt["variants"]
        checks.append(("compute_trainer", v["fulmen_trainer"]["ratio_to_raw"]))
        checks.append(("compute_fabric", v["fulmen_fabric"]["ratio_to_raw"]))
    imp = _load(out / "import_time.json")
    if imp:
        lines += ["## Import time", "", f"`{imp['command']}`", "", "| statement | median s | minus `import torch` |", "|---|---:|---:|"]
        for name, e in imp["statements"].items():
            lines.append(f"| `{name}` | {e['median_s']:.3f} | {e['minus_torch_s']:+.3f} |")
        lines.append("")
        checks.append(("import", imp["statements"]["import torch, fulmen"]["minus_torch_s"]))
    first = _load(out / "first_step.json")
    if first:
        lines += ["## Process start to first optimizer step", "", f"`{first['command']}`", "", "| variant | median s | minus raw |", "|---|---:|---:|"]
        for name, e in first["variants"].items():
            lines.append(f"| {name} | {e['median_s']:.2f} | {e['minus_raw_s']:+.2f} |")
        lines.append("")
    dd = _load(out / "ddp.json")
    if dd:
        lines += ["## DDP, 2 CPU processes (gloo)", "", f"`{dd['command']}`", "", "| variant | µs/step rank 0 | ratio to raw | final loss |", "|---|---:|---:|---:|"]
        for name, e in dd["variants"].items():
            lines.append(f"| {name} | {e['median_us']:.1f} | {fmt_ratio(e['ratio_to_raw'])} | {e['final_losses'][-1]:.5f} |")
        lines.append("")
    deps = _load(out / "deps_size.json")
    if deps:
        lines += ["## Install footprint beyond torch", ""]
        for label in ("fulmen", "lightning"):
            r = deps[label]
            names = ", ".join(f"{d['name']} {d['bytes'] / 1e6:.2f} MB" for d in r["added"].values())
            lines.append(f"- {label}: {len(r['added'])} distributions, {r['added_bytes'] / 1e6:.2f} MB: {names}")
        lines.append("")
    if checks:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---:|---|"]
        for key, value in checks:
            text, limit = TARGETS[key]
            shown = f"{value:+.3f} s" if key == "import" else fmt_ratio(value)
            lines.append(f"| {text} | {shown} | {'yes' if value <= limit else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
