"""How the per-step cost grows with the work a user adds: fulmen and Lightning side by side.

    python benchmarks/cost_growth.py [--repeats 5] [--steps 600] [--warmup 100]
                                     [--lightning-python PATH] [--json out.json]

Three axes, each a Trainer run of the tiny MLP of ``overhead.py`` (batch 32, AdamW, one
thread) with the progress bar, checkpointing and the model summary off and a CSV logger on,
so that what changes between the points of an axis is the one thing the axis varies:

  logs       1, 10, 50 ``self.log`` calls per training step (distinct names, default options)
  callbacks  0, 5, 20 callbacks, each implementing ``on_train_batch_start`` and
             ``on_train_batch_end`` (a counter increment each)
  params     10 and 1,000 parameter tensors (a chain of 16→16 Linear layers), with gradient
             clipping by norm on: ``zero_grad``, clipping and the optimizer step all walk
             every tensor. A hand-written loop doing the same (``clip_grad_norm_``, step,
             ``zero_grad``) is the reference, so the figure is the framework's ratio to it.

Each framework runs in its own process (``--lightning-python`` points at a virtualenv that has
Lightning; fulmen's process never imports it). Inside a process the points of an axis are
interleaved round by round. Reported per point: the median over rounds of the per-step
thread CPU time (robust to other processes on a shared machine: time spent waiting for a core
is not counted) and of the wall time per step. From those: the marginal cost of one more
logged value and of one more callback (least-squares slope over the points, µs per step), the
ratio fulmen/Lightning of those slopes (goal: at most 0.2), and whether the cost grows faster
than linearly (the last segment's slope more than 1.5× the first's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

AXES = {"logs": [1, 10, 50], "callbacks": [0, 5, 20], "params": [10, 1000]}


# --------------------------------------------------------------------------- children


def _net(param_tensors: int):
    """``param_tensors`` weights and biases: 64→16, (n/2 - 2) × 16→16, 16→10."""
    from torch import nn

    hidden = max(0, param_tensors // 2 - 2)
    layers = [nn.Linear(64, 16), nn.ReLU()] + [nn.Linear(16, 16) for _ in range(hidden)] + [nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def _point(axis: str, value: int):
    return {
        "logs": value if axis == "logs" else 1,
        "callbacks": value if axis == "callbacks" else 0,
        "params": value if axis == "params" else None,
    }


def _task(spec, point):
    import torch

    from common import Task

    torch.manual_seed(spec.seed)
    net = _net(point["params"]) if point["params"] else spec.build_net()
    return Task(net, "mlp", spec.warmup, spec.warmup + spec.steps)


def _run_raw(spec, point, tmp):
    import torch

    task = _task(spec, point)
    optimizer = spec.optimizer(task.parameters())
    clip = point["params"] is not None
    for x, y in spec.loader():
        loss = task(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return task


def _module_class(base, spec, point):
    names = [f"metric_{i}" for i in range(point["logs"])]

    class Bench(base):
        def __init__(self, task) -> None:
            super().__init__()
            self.task = task

        def training_step(self, batch, batch_idx):
            loss = self.task(*batch)
            for name in names:
                self.log(name, loss)
            return loss

        def configure_optimizers(self):
            return spec.optimizer(self.parameters())

    return Bench


def _callbacks(base, count: int):
    class Counting(base):
        def __init__(self) -> None:
            self.calls = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.calls += 1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.calls += 1

    return [Counting() for _ in range(count)]


def _trainer_kwargs(spec, point, tmp):
    return dict(
        accelerator="cpu", devices=1, max_steps=spec.total_steps, max_epochs=1, default_root_dir=tmp,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        gradient_clip_val=1.0 if point["params"] is not None else None,
    )


def _run_fulmen(spec, point, tmp):
    import fulmen
    from fulmen.loggers import CSVLogger

    task = _task(spec, point)
    module = _module_class(fulmen.Module, spec, point)(task)
    trainer = fulmen.Trainer(logger=CSVLogger(tmp), callbacks=_callbacks(fulmen.Callback, point["callbacks"]),
                             **_trainer_kwargs(spec, point, tmp))
    trainer.fit(module, spec.loader())
    return task


def _run_lightning(spec, point, tmp):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from common import quiet_lightning

    quiet_lightning()
    task = _task(spec, point)
    module = _module_class(L.LightningModule, spec, point)(task)
    trainer = L.Trainer(logger=CSVLogger(tmp), callbacks=_callbacks(L.Callback, point["callbacks"]),
                        **_trainer_kwargs(spec, point, tmp))
    trainer.fit(module, spec.loader())
    return task


RUNNERS = {"raw": _run_raw, "fulmen": _run_fulmen, "lightning": _run_lightning}


def child(framework: str, args) -> Dict[str, Dict[str, List[dict]]]:
    import torch

    from common import Spec

    torch.set_num_threads(1)
    spec = Spec(steps=args.steps, warmup=args.warmup)
    results: Dict[str, Dict[str, List[dict]]] = {}
    for axis, values in AXES.items():
        if framework == "raw" and axis != "params":
            continue
        per_value = results.setdefault(axis, {str(v): [] for v in values})
        for r in range(args.repeats):
            order = values[r % len(values):] + values[: r % len(values)]
            for value in order:
                with tempfile.TemporaryDirectory() as tmp:
                    task = RUNNERS[framework](spec, _point(axis, value), tmp)
                per_value[str(value)].append({"cpu_us": task.cpu_per_step_us(), "wall_us": task.per_step_us(),
                                              "loss": float(task.last_loss)})
    return results


# --------------------------------------------------------------------------- parent


def _launch(framework: str, python: str, args) -> Dict:
    with tempfile.TemporaryDirectory(prefix=f"growth-{framework}-") as tmp:
        out = os.path.join(tmp, "out.json")
        command = [python, os.path.abspath(__file__), "--child", framework, out, "--repeats", str(args.repeats),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"{framework} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(Path(out).read_text())


def _median(runs: List[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _slope(xs: List[float], ys: List[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def summarize(results: Dict[str, Dict]) -> Dict:
    summary: Dict[str, Dict] = {}
    for axis in ("logs", "callbacks"):
        xs = [float(v) for v in AXES[axis]]
        entry = summary.setdefault(axis, {})
        for framework in ("fulmen", "lightning"):
            if framework not in results:
                continue
            ys = [_median(results[framework][axis][str(v)], "cpu_us") for v in AXES[axis]]
            first = (ys[1] - ys[0]) / (xs[1] - xs[0])
            last = (ys[2] - ys[1]) / (xs[2] - xs[1])
            entry[framework] = {"cpu_us": ys, "slope_us": _slope(xs, ys),
                                "superlinear": bool(first > 0 and last > 1.5 * first)}
        if "lightning" in entry and entry["lightning"]["slope_us"] > 0:
            entry["slope_ratio"] = entry["fulmen"]["slope_us"] / entry["lightning"]["slope_us"]
    entry = summary.setdefault("params", {})
    for framework in ("raw", "fulmen", "lightning"):
        if framework in results:
            entry[framework] = {v: _median(results[framework]["params"][str(v)], "cpu_us") for v in AXES["params"]}
    for framework in ("fulmen", "lightning"):
        if framework in entry:
            entry[f"{framework}_ratio_to_raw"] = {v: entry[framework][v] / entry["raw"][v] for v in AXES["params"]}
    return summary


def markdown(results: Dict, summary: Dict) -> str:
    lines = ["| axis | point | fulmen CPU µs/step | Lightning CPU µs/step | raw CPU µs/step |", "|---|---:|---:|---:|---:|"]
    for axis, values in AXES.items():
        for v in values:
            cells = []
            for framework in ("fulmen", "lightning", "raw"):
                runs = results.get(framework, {}).get(axis, {}).get(str(v))
                cells.append(f"{_median(runs, 'cpu_us'):.1f}" if runs else "–")
            lines.append(f"| {axis} | {v} | " + " | ".join(cells) + " |")
    lines.append("")
    for axis in ("logs", "callbacks"):
        entry = summary[axis]
        text = [f"{fw}: {entry[fw]['slope_us']:.2f} µs per added {axis[:-1]}" + (" (grows faster than linearly)" if entry[fw]["superlinear"] else "")
                for fw in ("fulmen", "lightning") if fw in entry]
        ratio = f"; fulmen/Lightning = {entry['slope_ratio']:.3f} (goal ≤ 0.2)" if "slope_ratio" in entry else ""
        lines.append(f"- {axis}: " + "; ".join(text) + ratio)
    params = summary["params"]
    for fw in ("fulmen", "lightning"):
        if f"{fw}_ratio_to_raw" in params:
            r = params[f"{fw}_ratio_to_raw"]
            lines.append(f"- params: {fw} / raw = " + ", ".join(f"{r[v]:.3f}× at {v} tensors" for v in AXES["params"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lightning-python", default=sys.executable,
                   help="python of a virtualenv with Lightning (default: this one); 'none' to skip Lightning")
    p.add_argument("--json")
    p.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        framework, out = args.child
        Path(out).write_text(json.dumps(child(framework, args)))
        return 0

    from common import machine

    results = {"raw": _launch("raw", sys.executable, args), "fulmen": _launch("fulmen", sys.executable, args)}
    if args.lightning_python != "none":
        results["lightning"] = _launch("lightning", args.lightning_python, args)
    summary = summarize(results)
    print(markdown(results, summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary, "machine": machine(),
                                               "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
