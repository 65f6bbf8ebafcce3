"""Running the training scripts as real processes, killing them, and comparing what they end with."""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

HERE = Path(__file__).resolve().parent
TRAIN_SCRIPT = HERE / "train_script.py"
FABRIC_SCRIPT = HERE / "fabric_train_script.py"
# The Trainer run the tests use: 3 epochs of 12 shuffled batches, validation every 6 batches,
# a checkpoint every 3 steps, EarlyStopping ending it at step 30 (see train_script.py).
TRAINER_ARGS = ["--extras"]
FINAL_STEP = 30


def child_env(**extra: str) -> Dict[str, str]:
    """The test's environment without anything that changes how fulmen behaves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULMEN_", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Child:
    """A training script in its own process; its output is read line by line as it comes."""

    def __init__(self, script: Path, args: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=env if env is not None else child_env(),
        )
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 90.0) -> "re.Match[str]":
        """Block until a line matches ``pattern`` (a regex); fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{self.output}") from None
            if line is None:
                self.proc.wait()
                raise AssertionError(
                    f"the process ended (exit code {self.proc.returncode}) before printing {pattern!r}; "
                    f"args {self.args}; output:\n{self.output}"
                )
            match = re.search(pattern, line)
            if match:
                return match

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 120.0) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the process did not end within {timeout}s; output:\n{self.output}") from None
        self._reader.join(timeout=10)
        return self.proc.returncode

    def start_line(self) -> Dict[str, str]:
        """The fields of the ``START ...`` line (where training began)."""
        for line in self.lines:
            if line.startswith("START "):
                return dict(part.split("=", 1) for part in line.split()[1:])
        raise AssertionError(f"no START line in:\n{self.output}")

    def steps(self) -> List[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith("STEP ")]


def run_to_end(script: Path, args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 120.0) -> Child:
    child = Child(script, args, env)
    code = child.wait(timeout)
    assert code == 0, f"{script.name} {' '.join(map(str, args))} exited with {code}:\n{child.output}"
    return child


def kill_at(script: Path, args: Sequence[str], pause: str, env: Optional[Dict[str, str]] = None) -> Child:
    """Run until the script reaches ``pause`` (where it sleeps), then SIGKILL it there."""
    child = Child(script, [*args, "--pause", pause], env)
    child.wait_for(rf"^PAUSED {re.escape(pause)}$")
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL
    return child


def kill_after(script: Path, args: Sequence[str], step: int, delay: float, env: Optional[Dict[str, str]] = None) -> Child:
    """SIGKILL the script ``delay`` seconds after it printed ``STEP step`` (if still running)."""
    child = Child(script, args, env)
    child.wait_for(rf"^STEP {step}$")
    try:
        child.proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    child.kill()
    return child


# ---------------------------------------------------------------------------- comparing results
def load_result(path: Path) -> Dict[str, Any]:
    result = torch.load(path, weights_only=True)
    if "summary" in result:
        result["summary"] = json.loads(result["summary"])
    return result


def assert_bitwise_equal(actual: Any, expected: Any, where: str = "") -> None:
    """Tensors equal bit for bit (same dtype and shape), everything else ``==``."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: {type(actual).__name__} instead of a tensor"
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, f"{where}: {actual.dtype}{tuple(actual.shape)} vs {expected.dtype}{tuple(expected.shape)}"
        assert torch.equal(actual, expected), f"{where}: tensors differ (max abs diff {(actual.double() - expected.double()).abs().max().item():.3g})"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys differ: {sorted(map(str, set(actual) ^ set(expected)))}"
        for key in expected:
            assert_bitwise_equal(actual[key], expected[key], f"{where}.{key}" if where else str(key))
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} vs {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_bitwise_equal(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_same_training_state(result: Dict[str, Any], reference: Dict[str, Any]) -> None:
    """Parameters, optimizer state (Adam's moments, step counts, lr) and scheduler state."""
    for key in ("model", "optimizer", "scheduler"):
        assert_bitwise_equal(result[key], reference[key], key)


def metrics_rows(log_dir: Any) -> List[Dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def row_keys(rows: List[Dict[str, str]]) -> List[tuple]:
    """Each row as (step, the metrics it has a value for), in file order."""
    return [(int(row["step"]), tuple(sorted(k for k, v in row.items() if v not in ("", None) and k != "step"))) for row in rows]
