"""Processes started by ``mpirun``/``mpiexec`` (Open MPI's ``OMPI_*`` or MPICH/Intel's ``PMI_*``)."""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment
from fulmen.errors import FulmenConfigError


def _first(*names: str, default=None):
    for name in names:
        if name in os.environ:
            return os.environ[name]
    return default


class MPIEnvironment(ClusterEnvironment):
    name = "mpi"
    detection_priority = 10

    @classmethod
    def detect(cls) -> bool:
        return "OMPI_COMM_WORLD_SIZE" in os.environ or ("PMI_SIZE" in os.environ and "PMI_RANK" in os.environ)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    def world_size(self) -> int:
        return int(_first("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))

    def global_rank(self) -> int:
        return int(_first("OMPI_COMM_WORLD_RANK", "PMI_RANK"))

    def local_rank(self) -> int:
        return int(_first("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=0))

    def _local_size(self) -> int:
        return int(_first("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=self.world_size()))

    def node_rank(self) -> int:
        return self.global_rank() // max(1, self._local_size())

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in os.environ:
            return os.environ["MASTER_ADDR"]
        if self._local_size() == self.world_size():
            return "127.0.0.1"  # every rank on this node
        raise FulmenConfigError(
            "under mpirun across several nodes fulmen needs MASTER_ADDR (the address of rank 0's "
            "node) and MASTER_PORT in the environment, e.g. mpirun -x MASTER_ADDR=host0 -x MASTER_PORT=29500"
        )

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", 29500))
