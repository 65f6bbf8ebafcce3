"""Processes started by ``torchrun`` / TorchElastic (also Kubernetes PyTorchJob, Kubeflow)."""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class TorchElasticEnvironment(ClusterEnvironment):
    """Processes started by ``torchrun`` (TorchElastic), also Kubernetes PyTorchJob and Kubeflow,
    which set the same variables. Every process exists already, so fulmen launches nothing."""

    name = "torchelastic"
    detection_priority = 40

    @classmethod
    def detect(cls) -> bool:
        """True under ``TORCHELASTIC_RUN_ID`` or the full set of ``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; false in children of fulmen's own
        launcher, which set those variables too."""
        if os.environ.get("FULMEN_LAUNCHED"):
            return False  # fulmen's own launcher sets the same variables
        return "TORCHELASTIC_RUN_ID" in os.environ or all(v in os.environ for v in _REQUIRED)

    @property
    def creates_processes_externally(self) -> bool:
        """Always true: torchrun started every rank."""
        return True

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR`` as torchrun set it."""
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        """``MASTER_PORT`` as torchrun set it."""
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        """``WORLD_SIZE``."""
        return int(os.environ["WORLD_SIZE"])

    def global_rank(self) -> int:
        """``RANK``."""
        return int(os.environ["RANK"])

    def local_rank(self) -> int:
        """``LOCAL_RANK``."""
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        """``GROUP_RANK`` (torchrun's node index), else ``NODE_RANK``, else 0."""
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0)))
