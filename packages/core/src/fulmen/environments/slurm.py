"""Processes started by SLURM's ``srun`` (one task per device).

Detected only inside a job *step* (``SLURM_STEP_ID`` set): the batch script's own shell also
sees ``SLURM_PROCID=0`` and ``SLURM_NTASKS`` but is not rank zero of anything, and an
interactive ``salloc`` shell has no step either.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import List, Optional

from fulmen.environments.base import ClusterEnvironment
from fulmen.errors import FulmenConfigError

_INTERACTIVE_NAMES = ("bash", "interactive", "sh", "zsh")


def expand_nodelist(nodelist: str) -> List[str]:
    """``"n[1-3,7],gpu-a"`` → ``["n1", "n2", "n3", "n7", "gpu-a"]`` (SLURM's compressed form)."""
    hosts: List[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain.strip())
            continue
        for part in ranges.split(","):
            if "-" in part:
                low, high = part.split("-", 1)
                width = len(low)
                hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(low), int(high) + 1))
            else:
                hosts.append(f"{prefix}{part}")
    return hosts


class SLURMEnvironment(ClusterEnvironment):
    """Processes started by SLURM's ``srun``, one task per device, detected inside a job step.

    The batch script's own shell and interactive allocations (``salloc`` shells, jobs named
    ``bash``/``interactive``) are not taken for rank 0 of a step. After a preemption save it
    requeues the batch job with ``scontrol requeue``."""

    name = "slurm"
    detection_priority = 30

    @classmethod
    def detect(cls) -> bool:
        """True inside a job step (``SLURM_NTASKS`` and ``SLURM_STEP_ID`` set) of a job that is not
        an interactive one."""
        if "SLURM_NTASKS" not in os.environ or "SLURM_STEP_ID" not in os.environ:
            return False
        return os.environ.get("SLURM_JOB_NAME", "") not in _INTERACTIVE_NAMES

    @property
    def creates_processes_externally(self) -> bool:
        """Always true: ``srun`` started every task."""
        return True

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` if set, otherwise the first host of the step's (or job's) node list,
        expanded from SLURM's compressed form."""
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise FulmenConfigError("SLURM_NODELIST is not set; set MASTER_ADDR to the first node's address")
        return expand_nodelist(nodelist)[0]

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` if set, otherwise a port derived from the job id: the same on every task
        of the job, different for jobs that share a node."""
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        # Same on every task of the job, different between jobs sharing a node.
        job_id = int(os.environ.get("SLURM_JOB_ID", "0"))
        return 15000 + job_id % 20000

    def world_size(self) -> int:
        """``SLURM_NTASKS``."""
        return int(os.environ["SLURM_NTASKS"])

    def global_rank(self) -> int:
        """``SLURM_PROCID``."""
        return int(os.environ["SLURM_PROCID"])

    def local_rank(self) -> int:
        """``SLURM_LOCALID``."""
        return int(os.environ["SLURM_LOCALID"])

    def node_rank(self) -> int:
        """``SLURM_NODEID`` (0 when unset)."""
        return int(os.environ.get("SLURM_NODEID", 0))

    @staticmethod
    def job_id() -> str:
        """``SLURM_JOB_ID``, or an empty string outside a SLURM job."""
        return os.environ.get("SLURM_JOB_ID", "")

    @classmethod
    def scheduled_job(cls) -> bool:
        """True in any process of a non-interactive SLURM job, even one started without ``srun``, so
        that a preemption there still requeues the job."""
        return bool(os.environ.get("SLURM_JOB_ID")) and os.environ.get("SLURM_JOB_NAME") not in _INTERACTIVE_NAMES

    def requeue(self) -> Optional[str]:
        """``scontrol requeue`` for this batch job (array tasks by their own id); an
        interactive allocation is not requeued, since nothing would run it again."""
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID") and (
            f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        ) or os.environ.get("SLURM_JOB_ID")
        if not job_id or os.environ.get("SLURM_JOB_NAME") in _INTERACTIVE_NAMES:
            return None
        try:
            result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"scontrol requeue {job_id} failed: {exc}"
        if result.returncode != 0:
            return f"scontrol requeue {job_id} failed: {result.stderr.strip()}"
        return f"requeued SLURM job {job_id}"
