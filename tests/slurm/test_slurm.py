"""Training under a real SLURM controller and node on 127.0.0.1 (started by slurm_cluster.sh):
``srun -n 2`` ranks are found through SLURM's variables, and SIGUSR1 from the scheduler
leads to checkpoint → ``scontrol requeue`` → a restarted job that resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "core" / "distributed" / "ddp_script.py"
PYTHON = sys.executable

if not shutil.which("slurmctld") or not shutil.which("srun"):
    pytest.skip(
        "SLURM daemons are not installed (Debian: apt-get install slurmctld slurmd slurm-client; "
        "`nox -s slurm` does it); the SLURM environment is still covered through its variables in "
        "tests/core/distributed/test_cluster_environments.py",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm")
    subprocess.run(["bash", str(HERE / "slurm_cluster.sh"), "start", str(directory)], check=True, timeout=120)
    env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf")}
    yield env
    subprocess.run(["bash", str(HERE / "slurm_cluster.sh"), "stop", str(directory)], timeout=60)


def ranks(out: Path):
    return [json.loads((out / f"rank_{r}.json").read_text()) for r in range(2)]


def diagnose(env, job_id: str, log: str) -> str:
    """What the job log alone does not say when a restart never comes: the job's record and
    the controller's last words (its log lies beside slurm.conf)."""
    job = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True)
    controller_log = Path(env["SLURM_CONF"]).parent / "log" / "slurmctld.log"
    tail = "\n".join(controller_log.read_text(errors="replace").splitlines()[-40:]) if controller_log.exists() else ""
    return f"{log}\n--- scontrol show job\n{job.stdout}{job.stderr}\n--- slurmctld.log (tail)\n{tail}"


def test_srun_two_tasks_train_as_one_ddp_job(slurm, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["srun", "-N1", "-n2", "--job-name=fulmen-test", PYTHON, str(SCRIPT), "--out", str(out)],
        env=slurm, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = ranks(out)
    assert [r["environment"] for r in results] == ["SLURMEnvironment"] * 2
    assert [r["rank"] for r in results] == [0, 1] and all(r["world_size"] == 2 for r in results)
    assert results[0]["params"] == results[1]["params"]


def test_sigusr1_checkpoints_requeues_and_the_restart_resumes_exactly(slurm, tmp_path):
    reference = tmp_path / "reference"
    proc = subprocess.run(
        ["srun", "-N1", "-n2", "--job-name=fulmen-ref", PYTHON, str(SCRIPT), "--out", str(reference), "--epochs", "3"],
        env=slurm, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    out = tmp_path / "out"
    log = tmp_path / "job.out"
    job = tmp_path / "job.sh"
    job.write_text(f"""#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={log}
echo "start restart_count=${{SLURM_RESTART_COUNT:-0}}"
srun {PYTHON} {SCRIPT} --out {out} --epochs 3 --step-sleep 0.3 --ckpt-path last
echo "srun exit $?"
""")
    submitted = subprocess.run(["sbatch", "--parsable", str(job)], env=slurm, capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().split(";")[0]

    def read_log():
        return log.read_text() if log.exists() else ""

    deadline = time.monotonic() + 120
    while "rank 0 step 2" not in read_log():
        assert time.monotonic() < deadline, read_log()
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm, check=True)

    # fulmen saved, asked SLURM to requeue, and both tasks left with the preemption code
    deadline = time.monotonic() + 120
    while "requeued SLURM job" not in read_log():
        assert time.monotonic() < deadline, read_log()
        time.sleep(0.2)
    # A requeued job waits for its BeginTime (minutes). Move it to now, and keep doing so while
    # it is pending: under load the controller can finish the requeue (and set BeginTime
    # again) after the first update, which left the job waiting past the deadline in CI.
    deadline = time.monotonic() + 240
    while read_log().count("srun exit 0") < 1:
        assert time.monotonic() < deadline, diagnose(slurm, job_id, read_log())
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], env=slurm, capture_output=True, text=True).stdout.strip()
        if state.startswith("PENDING"):
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm, capture_output=True)
        time.sleep(1.0)
    text = read_log()
    assert "start restart_count=1" in text, text
    assert "SIGUSR1 received" in text and "Resume with ckpt_path='last'" in text
    resumed, expected = ranks(out), ranks(reference)
    assert [r["params"] for r in resumed] == [r["params"] for r in expected]
    assert all(r["global_step"] == 12 for r in resumed)
