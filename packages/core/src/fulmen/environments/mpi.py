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
    """Processes started by ``mpirun``/``mpiexec``: Open MPI's ``OMPI_COMM_WORLD_*`` variables or
    MPICH/Intel MPI's ``PMI_*``. fulmen uses MPI only to learn the ranks; the process group is
    still formed by ``torch.distributed`` at ``MASTER_ADDR:MASTER_PORT``."""

    name = "mpi"
    detection_priority = 10

    @classmethod
    def detect(cls) -> bool:
        """True under Open MPI (``OMPI_COMM_WORLD_SIZE``) or a PMI launcher (``PMI_SIZE`` and ``PMI_RANK``)."""
        return "OMPI_COMM_WORLD_SIZE" in os.environ or ("PMI_SIZE" in os.environ and "PMI_RANK" in os.environ)

    @property
    def creates_processes_externally(self) -> bool:
        """Always true: the MPI launcher started every rank."""
        return True

    def world_size(self) -> int:
        """``OMPI_COMM_WORLD_SIZE`` or ``PMI_SIZE``."""
        return int(_first("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))

    def global_rank(self) -> int:
        """``OMPI_COMM_WORLD_RANK`` or ``PMI_RANK``."""
        return int(_first("OMPI_COMM_WORLD_RANK", "PMI_RANK"))

    def local_rank(self) -> int:
        """The launcher's local rank variable (Open MPI, Intel MPI or PMI), 0 when none is set."""
        return int(_first("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=0))

    def _local_size(self) -> int:
        return int(_first("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=self.world_size()))

    def node_rank(self) -> int:
        """The global rank divided by the number of ranks on each node."""
        return self.global_rank() // max(1, self._local_size())

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` if set; ``127.0.0.1`` when every rank runs on this node; across nodes
        it cannot be guessed, so a ``FulmenConfigError`` says to pass ``MASTER_ADDR``."""
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
        """``MASTER_PORT``, or 29500 (torch's usual default)."""
        return int(os.environ.get("MASTER_PORT", 29500))
