"""This machine: a single process, or processes that fulmen's own launcher started.

The launcher passes each child its place through ``FULMEN_LAUNCHED``, ``LOCAL_RANK``,
``NODE_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; a process without them is
local rank 0 (the one that will start the others).
"""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    name = "local"
    detection_priority = -100

    def __init__(self, num_processes: int = 1, num_nodes: int = 1) -> None:
        self.num_processes = num_processes
        self.num_nodes = num_nodes

    @classmethod
    def detect(cls) -> bool:
        return True

    @property
    def launched_by_fulmen(self) -> bool:
        return bool(os.environ.get("FULMEN_LAUNCHED"))

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))

    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", self.num_processes * self.num_nodes))

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    def global_rank(self) -> int:
        if "RANK" in os.environ and self.launched_by_fulmen:
            return int(os.environ["RANK"])
        return self.node_rank() * self.num_processes + self.local_rank()
