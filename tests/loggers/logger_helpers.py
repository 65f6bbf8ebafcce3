"""What the logger tests share: a real ``mlflow server`` on 127.0.0.1, W&B offline read-back,
TensorBoard read-back, and a pacing callback. Importable as ``from logger_helpers import ...``
(tests/loggers/conftest.py puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import fulmen

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


class MlflowServer:
    """``mlflow server`` with a sqlite store and proxied artifacts under ``root``, in its own
    process group; stopped by signalling that group (never by process name)."""

    def __init__(self, root: Path, port: Optional[int] = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / f"server-{self.starts}.log"

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        self.starts += 1
        log = open(self.log_path, "wb")
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True, cwd=self.root
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own group: the server and its workers
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # The workers of the group may outlive the parent by a moment.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


def metric_steps(client, run_id: str, key: str) -> List[int]:
    """Every step stored for ``key``, in the order MLflow returns them, duplicates included."""
    return [m.step for m in client.get_metric_history(run_id, key)]


# ---------------------------------------------------------------------------------- W&B


def wandb_records(run_dir: Path) -> List[Dict[str, Any]]:
    """The records of a ``.wandb`` transaction log, read back by the wandb CLI itself."""
    proc = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wandb_summary(run_dir: Path) -> Dict[str, Any]:
    proc = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wandb_history(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def wandb_run_dirs(root: Path, run_id: str) -> List[Path]:
    """The offline run folders of ``run_id`` under ``root``, oldest first."""
    return sorted(p.parent for p in Path(root).rglob(f"run-{run_id}.wandb"))


# ---------------------------------------------------------------------------------- TensorBoard


def tb_scalars(log_dir: Path) -> Dict[str, List[tuple]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ---------------------------------------------------------------------------------- training


class StepClock(fulmen.Callback):
    """Times each training batch (start to end of the hook pair) and paces the loop."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep
        self.durations: List[tuple] = []  # (global_step, seconds, tag)
        self.ends: List[float] = []  # time.monotonic() at each batch end
        self.tag = "up"
        self._t0 = 0.0
        self.stop_requested = False

    def on_train_batch_start(self, trainer) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        self.durations.append((trainer.global_step, time.perf_counter() - self._t0, self.tag))
        self.ends.append(time.monotonic())
        if self.stop_requested:
            trainer.should_stop = True


class RecordingLogger(fulmen.loggers.Logger):
    """Remembers what the Trainer asked loggers to log: the reference a backend must match."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.params: Dict[str, Any] = {}
        self.checkpoints: List[tuple] = []

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params) -> None:
        self.params = dict(params)

    def log_checkpoint(self, path, aliases=None) -> None:
        self.checkpoints.append((path, list(aliases or [])))

    def steps(self, key: str) -> List[int]:
        return [step for step, metrics in self.calls if key in metrics]

    def values(self, key: str) -> List[tuple]:
        return [(step, metrics[key]) for step, metrics in self.calls if key in metrics]

    def keys(self) -> List[str]:
        return sorted({k for _, metrics in self.calls for k in metrics})
