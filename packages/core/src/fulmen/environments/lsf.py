"""Processes started by IBM LSF's ``jsrun`` (Summit-style ``JSM_NAMESPACE_*`` variables)."""

from __future__ import annotations

import os
from typing import List

from fulmen.environments.base import ClusterEnvironment
from fulmen.errors import FulmenConfigError


class LSFEnvironment(ClusterEnvironment):
    """Processes started by IBM LSF's ``jsrun`` (Summit-style clusters), read from the
    ``JSM_NAMESPACE_*`` and ``LSB_*`` variables."""

    name = "lsf"
    detection_priority = 20

    @classmethod
    def detect(cls) -> bool:
        """True when ``LSB_JOBID``, ``JSM_NAMESPACE_SIZE`` and ``JSM_NAMESPACE_RANK`` are all set."""
        return "LSB_JOBID" in os.environ and "JSM_NAMESPACE_SIZE" in os.environ and "JSM_NAMESPACE_RANK" in os.environ

    @property
    def creates_processes_externally(self) -> bool:
        """Always true: ``jsrun`` started every rank."""
        return True

    def _hosts(self) -> List[str]:
        """Compute hosts in job order, without the launch node (``batch`` in the list)."""
        rankfile = os.environ.get("LSB_DJOB_RANKFILE")
        if rankfile and os.path.exists(rankfile):
            with open(rankfile) as handle:
                hosts = [line.strip() for line in handle if line.strip()]
            return hosts[1:] if len(hosts) > 1 else hosts
        mcpu = os.environ.get("LSB_MCPU_HOSTS", "").split()
        hosts = mcpu[::2]
        if hosts and hosts[0].startswith("batch"):
            hosts = hosts[1:]
        if not hosts:
            raise FulmenConfigError("LSF: neither LSB_DJOB_RANKFILE nor LSB_MCPU_HOSTS lists the job's hosts")
        return hosts

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` if set, otherwise the first compute host of the job (the launch node
        is skipped)."""
        return os.environ.get("MASTER_ADDR") or self._hosts()[0]

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` if set, otherwise a port derived from ``LSB_JOBID``."""
        if "MASTER_PORT" in os.environ:
            return int(os.environ["MASTER_PORT"])
        return 10000 + int(os.environ["LSB_JOBID"]) % 1000

    def world_size(self) -> int:
        """``JSM_NAMESPACE_SIZE``."""
        return int(os.environ["JSM_NAMESPACE_SIZE"])

    def global_rank(self) -> int:
        """``JSM_NAMESPACE_RANK``."""
        return int(os.environ["JSM_NAMESPACE_RANK"])

    def local_rank(self) -> int:
        """``JSM_NAMESPACE_LOCAL_RANK`` (0 when unset)."""
        return int(os.environ.get("JSM_NAMESPACE_LOCAL_RANK", 0))

    def node_rank(self) -> int:
        """The global rank divided by the ranks per node (``JSM_NAMESPACE_LOCAL_SIZE``)."""
        local_size = int(os.environ.get("JSM_NAMESPACE_LOCAL_SIZE", 0)) or 1
        return self.global_rank() // local_size
