"""One local Ray cluster on 127.0.0.1 for the whole tests/ray module set (a start costs
seconds), and the Ray Train jobs the tests read back.

Skipped as a whole, with the reason, where ray is not installed (the default ``nox -s tests``
session); ``nox -s ray`` installs it. The cluster's files live under a short folder in /tmp
(Ray's socket paths have a length limit), and everything it started is stopped by PID
(its processes are children of this one), never with ``ray stop``, which kills by name.
"""

from __future__ import annotations

from importlib import metadata
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SKIP_REASON = 'ray is not installed: pip install "fulmen-ray[ray]" (or run nox -s ray)'


def ray_installed() -> bool:
    """Ray's distribution is installed. Asked of the metadata, not of the import system: this
    folder is itself importable as a namespace package called ``ray`` wherever ``tests/`` is
    on ``sys.path`` (pytest puts it there), and only a real Ray is found before it."""
    try:
        metadata.version("ray")
    except metadata.PackageNotFoundError:
        return False
    return True


def pytest_report_header(config):
    return None if ray_installed() else f"tests/ray skipped: {SKIP_REASON}"


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU Ray cluster of this machine, shared by the tests of tests/ray."""
    import psutil
    import ray

    import ray_programs

    folder = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    os.environ.update({
        "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": folder, "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "OMP_NUM_THREADS": "1",
        # Ray's controller collects reports and notices dead workers when it polls (every 2 s
        # by default): polling faster shortens the kill test, and changes nothing it checks.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    })
    # Workers unpickle the training function: send the module's code with it.
    ray.cloudpickle.register_pickle_by_value(ray_programs)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=folder,
             log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    started = psutil.Process().children(recursive=True)
    try:
        yield folder
    finally:
        ray.shutdown()
        for process in started + psutil.Process().children(recursive=True):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(folder, ignore_errors=True)



def recorder(path: Path):
    """A Ray Train callback (it runs in Ray's controller) that appends what rank zero
    reported to a JSON-lines file, one line per ``ray.train.report``."""
    import json

    from ray.train import UserCallback

    class RecordReports(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as handle:
                handle.write(json.dumps({"metrics": metrics[0], "checkpoint": checkpoint is not None, "time": time.time()}) + "\n")

    return RecordReports()


def read_reports(path: Path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_when_announced(pid_file: Path, reports: Path, timeout: float = 300.0) -> threading.Thread:
    """A watcher that SIGKILLs the PID the worker writes to ``pid_file``, once Ray's controller
    has registered a checkpoint (``reports`` has one): a report is committed only when the
    controller collects it (it polls the workers every 2 s), and the test checks the resume
    from a committed checkpoint, not how quickly Ray polls."""
    import signal

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid_file.exists() and any(r["checkpoint"] for r in read_reports(reports)):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run_ray_job(tmp: Path, **config):
    """Run ``ray_programs.ray_train_fn`` on 2 workers with the report recorder."""
    import fulmen_ray
    import ray_programs

    out = tmp / "out"
    config = {"out": str(out), **config}
    result = fulmen_ray.run(
        ray_programs.ray_train_fn, num_workers=2, config=config, max_failures=config.pop("max_failures", 0),
        storage_path=str(tmp / "ray_storage"), name="job", callbacks=[recorder(tmp / "reports.jsonl")],
    )
    return result, out, read_reports(tmp / "reports.jsonl")


@pytest.fixture(scope="session")
def ddp_launch(tmp_path_factory):
    """The same program under fulmen's own DDP on 2 processes (gloo), the reference: started
    before the Ray cluster and read when needed, since most of a Ray job's time is waiting."""
    out = tmp_path_factory.mktemp("ddp") / "out"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    log = open(out.parent / "ddp.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "ray_programs.py"), str(out)], env={**env, "OMP_NUM_THREADS": "1"},
                            stdout=log, stderr=subprocess.STDOUT)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()


@pytest.fixture(scope="session")
def ddp_reference(ddp_launch):
    proc, out = ddp_launch
    code = proc.wait(timeout=300)
    assert code == 0, (out.parent / "ddp.log").read_text()[-4000:]
    return out


@pytest.fixture(scope="session")
def uninterrupted(ddp_launch, ray_cluster, tmp_path_factory):
    return run_ray_job(tmp_path_factory.mktemp("ray_plain"))


@pytest.fixture(scope="session")
def without_logger(ddp_launch, ray_cluster, tmp_path_factory):
    """The same job with ``logger=False``: rows still reach Ray."""
    return run_ray_job(tmp_path_factory.mktemp("ray_no_logger"), no_logger=True)


@pytest.fixture(scope="session")
def killed(ddp_launch, ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray_killed")
    pid_file = tmp / "worker.pid"
    watcher = kill_when_announced(pid_file, tmp / "reports.jsonl")
    outcome = run_ray_job(tmp, kill_at_step=5, kill_rank=1, pid_file=str(pid_file), max_failures=2)
    watcher.join(timeout=1)
    return (*outcome, pid_file)
