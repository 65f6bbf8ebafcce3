"""Processes started by ``torchrun`` / TorchElastic (also Kubernetes PyTorchJob, Kubeflow)."""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class TorchElasticEnvironment(ClusterEnvironment):
    name = "torchelastic"
    detection_priority = 40

    @classmethod
    def detect(cls) -> bool:
        if os.environ.get("FULMEN_LAUNCHED"):
            return False  # fulmen's own launcher sets the same variables
        return "TORCHELASTIC_RUN_ID" in os.environ or all(v in os.environ for v in _REQUIRED)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(os.environ["MASTER_PORT"])

    def world_size(self) -> int:
        return int(os.environ["WORLD_SIZE"])

    def global_rank(self) -> int:
        return int(os.environ["RANK"])

    def local_rank(self) -> int:
        return int(os.environ["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", 0)))
