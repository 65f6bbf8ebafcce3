"""Where this process sits in a job: world size, ranks, the rendezvous address.

Environments are detected in ``detection_priority`` order (highest first); the local one has
the lowest priority and always matches, so a plain ``python train.py`` needs no settings.
"""

from __future__ import annotations


class ClusterEnvironment:
    name: str = ""
    detection_priority: int = 0

    @classmethod
    def detect(cls) -> bool:
        """True when this process was started by the scheduler this class describes."""
        return False

    @property
    def creates_processes_externally(self) -> bool:
        """True when a launcher (torchrun, srun, mpirun) already started every process."""
        return False

    @property
    def main_address(self) -> str:
        return "127.0.0.1"

    @property
    def main_port(self) -> int:
        return 0

    def world_size(self) -> int:
        return 1

    def global_rank(self) -> int:
        return 0

    def local_rank(self) -> int:
        return 0

    def node_rank(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
