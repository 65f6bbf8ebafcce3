"""Kill-and-resume stress: many runs, each SIGKILLed at random points, must end bit for bit
where an uninterrupted run ends.

    python benchmarks/checkpoint_stress.py [--runs 30] [--seed 0] [--jobs 2] [--fabric-every 4]

Each run trains ``tests/core/checkpointing/train_script.py`` (3 epochs of 12 shuffled batches,
dropout, Adam, StepLR, validation twice an epoch, a checkpoint every 3 steps, top-2 checkpoints
on val_loss, EarlyStopping ending at step 30, CSV metrics) in a fresh directory, kills it 1 to 3
times and resumes with ``ckpt_path="last"`` after each kill, then runs it to the end and compares
parameters, optimizer and scheduler state (``torch.equal``) and the rows of metrics.csv with an
uninterrupted reference. Every ``--fabric-every``-th run uses the Fabric loop
(``fabric_train_script.py``) instead. Every save sleeps 20 ms halfway through its write, so
random kills often land inside one; a quarter of the Trainer runs save asynchronously.

A kill point is one of: an exact event the script pauses at (``step:N``, ``saved:N`` right after
a checkpoint, ``val_end:N`` after a validation, ``midwrite:K`` halfway through the K-th write),
or a random time (a random step, then up to 60 ms more). Points are drawn from a seeded RNG, so
``--seed`` reproduces a run's schedule (not the exact instant of a timed kill).

Prints one line per run and a summary; exits 1 if any run ended differently or crashed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "core" / "checkpointing"))

import torch  # noqa: E402

from ckpt_helpers import (  # noqa: E402
    FABRIC_SCRIPT,
    FINAL_STEP,
    TRAIN_SCRIPT,
    TRAINER_ARGS,
    Child,
    assert_bitwise_equal,
    load_result,
    metrics_rows,
    run_to_end,
)

FABRIC_FINAL_STEP = 36
SLOW_SAVE = "0.02"


def _kill_point(rng: random.Random, fabric: bool, after: int):
    """A kill spec beyond step ``after``: ("pause", event) or ("timed", step, delay); None
    when no step is left to kill at."""
    final = FABRIC_FINAL_STEP if fabric else FINAL_STEP
    if after >= final - 2:
        return None
    kind = rng.choice(["step", "saved", "val_end", "midwrite", "timed", "timed"])
    every = 5 if fabric else 3
    saves = [n for n in range(every, final, every) if n > after]
    validations = [n for n in range(6, final, 6) if n > after]
    if kind == "saved" and saves:
        return ("pause", f"saved:{rng.choice(saves)}")
    if kind == "val_end" and validations and not fabric:
        return ("pause", f"val_end:{rng.choice(validations)}")
    if kind == "midwrite":
        return ("pause", f"midwrite:{rng.randint(1, 2)}")
    if kind == "timed":
        return ("timed", rng.randint(after + 1, final - 2), rng.uniform(0.0, 0.06))
    return ("pause", f"step:{rng.randint(after + 1, final - 1)}")


def _kill(script, args, spec):
    """Run the script and kill it as ``spec`` says. Returns (child, what happened)."""
    if spec[0] == "pause":
        event = spec[1]
        child = Child(script, [*args, "--pause", event])
        try:
            child.wait_for(rf"^PAUSED {event}$")
        except AssertionError:
            if child.proc.returncode == 0:
                return child, f"finished before {event}"
            raise
        child.kill()
        return child, f"killed at {event}"
    _, step, delay = spec
    child = Child(script, args)
    try:
        child.wait_for(rf"^STEP {step}$")
    except AssertionError:
        if child.proc.returncode == 0:
            return child, f"finished before step {step}"
        raise
    time.sleep(delay)
    child.kill()
    return child, f"killed {delay * 1000:.0f} ms after step {step}"


def _reference(directory: Path, fabric: bool):
    script = FABRIC_SCRIPT if fabric else TRAIN_SCRIPT
    args = [] if fabric else list(TRAINER_ARGS)
    root = directory / ("fabric_reference" if fabric else "trainer_reference")
    run_to_end(script, [*args, "--root", root, "--out", root / "result.pt"])
    result = load_result(root / "result.pt")
    rows = None if fabric else metrics_rows(result["summary"]["log_dir"])
    return result, rows


def one_run(index: int, seed: int, directory: Path, fabric: bool, references) -> dict:
    rng = random.Random(f"{seed}-{index}")
    use_async = not fabric and rng.random() < 0.25
    script = FABRIC_SCRIPT if fabric else TRAIN_SCRIPT
    root = directory / f"run{index:03d}"
    args = ([] if fabric else list(TRAINER_ARGS)) + ["--root", str(root), "--slow-save", SLOW_SAVE]
    if use_async:
        args.append("--async-save")
    record = {"run": index, "script": "fabric" if fabric else "trainer", "async": use_async, "events": [], "ok": False}
    started = time.monotonic()
    try:
        reached = 0  # the next process starts at or before the last step the previous one printed
        for number in range(rng.randint(1, 3)):
            spec = _kill_point(rng, fabric, reached)
            if spec is None:
                break
            partial = set(root.rglob("*.tmp")) if root.exists() else set()
            child, what = _kill(script, [*args, "--resume"] if number else args, spec)
            if spec[0] == "timed" and set(root.rglob("*.tmp")) - partial:
                what += " (inside a write)"
            record["events"].append(what)
            reached = max([reached, *child.steps()])
        out = root / "result.pt"
        end = run_to_end(script, [*args, "--resume", "--out", out])
        record["resumed_from_step"] = int(end.start_line()["step"])
        result, (reference, reference_rows) = load_result(out), references[fabric]
        for key in ("model", "optimizer", "scheduler"):
            assert_bitwise_equal(result[key], reference[key], key)
        if not fabric:
            rows = metrics_rows(result["summary"]["log_dir"])
            assert rows == reference_rows, "metrics.csv differs from the uninterrupted run's"
            assert result["summary"]["es"] == reference["summary"]["es"], "EarlyStopping state differs"
            assert result["summary"]["best"] == reference["summary"]["best"], "best-k checkpoints differ"
        record["ok"] = True
    except AssertionError as exc:
        lines = str(exc).splitlines()
        # The first line says what differed; a process that died also left its output's tail.
        record["failure"] = "\n     ".join([lines[0][:300]] + [line for line in lines[1:] if not line.startswith("STEP ")][-15:])
    except Exception:  # a crash is a failure too, with its traceback kept
        record["failure"] = traceback.format_exc()[-1500:]
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="kill-and-resume runs (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2, the cores here)")
    parser.add_argument("--fabric-every", type=int, default=4, help="every N-th run uses the Fabric loop (0: never)")
    parser.add_argument("--json", default=None, help="also write every run's record to this file")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--only", default=None, help="comma-separated run numbers to (re)run, e.g. 12,40")
    args = parser.parse_args(argv)

    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="fulmen-stress-"))
    print(f"fulmen checkpoint stress: {args.runs} runs, seed {args.seed}, {args.jobs} at a time, in {directory}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {fabric: pool.submit(_reference, directory, fabric) for fabric in (False, True)}
        references = {fabric: future.result() for fabric, future in futures.items()}
        kinds = [bool(args.fabric_every) and (i + 1) % args.fabric_every == 0 for i in range(args.runs)]
        selected = [int(n) for n in args.only.split(",")] if args.only else range(args.runs)
        jobs = [pool.submit(one_run, i, args.seed, directory, kinds[i], references) for i in selected]
        records = []
        for future in concurrent.futures.as_completed(jobs):
            record = future.result()
            records.append(record)
            status = "ok  " if record["ok"] else "FAIL"
            print(
                f"{status} run {record['run']:3d} {record['script']:7s}{' async' if record['async'] else '      '} "
                f"{record['seconds']:5.1f}s  {'; '.join(record['events'])}; resumed from step {record.get('resumed_from_step', '?')}"
                + (f"\n     {record['failure']}" if not record["ok"] else ""),
                flush=True,
            )
    records.sort(key=lambda r: r["run"])
    kills = sum(e.startswith("killed") for r in records for e in r["events"])
    failures = [r for r in records if not r["ok"]]
    elapsed = time.monotonic() - started
    print(
        f"\nruns: {len(records)} ({sum(r['script'] == 'fabric' for r in records)} Fabric, "
        f"{sum(r['async'] for r in records)} async), kills: {kills} "
        f"({sum('midwrite' in e for r in records for e in r['events'])} during a write by design, "
        f"{sum(' ms after step' in e for r in records for e in r['events'])} at random times, "
        f"{sum('(inside a write)' in e for r in records for e in r['events'])} of which inside a write), "
        f"failures: {len(failures)}, time: {elapsed:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "seconds": round(elapsed, 1), "runs": records}, indent=1))
    if not args.keep and not failures:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    elif failures:
        print(f"run directories kept in {directory}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
