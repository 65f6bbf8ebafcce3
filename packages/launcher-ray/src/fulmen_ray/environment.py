"""Where a Ray Train worker sits in its job, read from Ray Train's own context.

Ray Train also exports torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so the torchelastic environment would match too; this one
ranks above it because Ray's context is the source those variables are copied from, and it
says that the processes and the process group belong to Ray.
"""

from __future__ import annotations

import os
import sys

from fulmen.environments.base import ClusterEnvironment


def _context():
    import ray.train

    return ray.train.get_context()


class RayEnvironment(ClusterEnvironment):
    """A worker of a Ray Train job (``TorchTrainer``): Ray started every worker and, for
    ``TorchTrainer``, already formed the process group, so fulmen launches nothing.

    Detected only inside a training function that Ray Train runs: ``detect`` never imports
    Ray itself (a process that has not imported ``ray.train`` is not one of its workers)."""

    name = "ray"
    detection_priority = 50  # above torchelastic (40), whose variables Ray Train also sets

    @classmethod
    def detect(cls) -> bool:
        """True inside a Ray Train worker's training function."""
        if "ray.train" not in sys.modules:
            return False
        try:
            _context().get_world_size()
        except Exception:  # outside a worker Ray raises (which error depends on its version)
            return False
        return True

    @property
    def creates_processes_externally(self) -> bool:
        """Always true: Ray Train started every worker."""
        return True

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` as Ray Train set it for the process group (rank 0's node)."""
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` as Ray Train set it; 0 where it formed the group another way."""
        return int(os.environ.get("MASTER_PORT", 0))

    def world_size(self) -> int:
        """The number of workers in the group (``get_world_size``)."""
        return _context().get_world_size()

    def global_rank(self) -> int:
        """This worker's index in the group (``get_world_rank``)."""
        return _context().get_world_rank()

    def local_rank(self) -> int:
        """This worker's index among the workers on its node (``get_local_rank``)."""
        return _context().get_local_rank()

    def node_rank(self) -> int:
        """The index of this worker's node (``get_node_rank``)."""
        return _context().get_node_rank()
