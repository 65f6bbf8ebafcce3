"""This machine: a single process, or processes that fulmen's own launcher started.

The launcher passes each child its place through ``FULMEN_LAUNCHED``, ``LOCAL_RANK``,
``NODE_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; a process without them is
local rank 0 (the one that will start the others).
"""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    """One machine without a scheduler: a plain ``python train.py``, or the processes fulmen's own
    launcher started from it (``strategy="ddp"`` re-runs the command once per device).

    It always matches and has the lowest priority, so it is what remains when no scheduler is
    detected. ``num_processes`` and ``num_nodes`` give the world size before any child exists."""

    name = "local"
    detection_priority = -100

    def __init__(self, num_processes: int = 1, num_nodes: int = 1) -> None:
        self.num_processes = num_processes
        self.num_nodes = num_nodes

    @classmethod
    def detect(cls) -> bool:
        """Always true: the fallback when no scheduler's variables are set."""
        return True

    @property
    def launched_by_fulmen(self) -> bool:
        """True in a child process that fulmen's launcher started (``FULMEN_LAUNCHED`` is set), as
        opposed to the process that starts the others."""
        return bool(os.environ.get("FULMEN_LAUNCHED"))

    @property
    def main_address(self) -> str:
        """``MASTER_ADDR``, or this machine (``127.0.0.1``)."""
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        """``MASTER_PORT``, or 0 until fulmen's launcher has picked a free port and exported it."""
        return int(os.environ.get("MASTER_PORT", "0"))

    def world_size(self) -> int:
        """``WORLD_SIZE`` from the launcher, or ``num_processes * num_nodes``."""
        return int(os.environ.get("WORLD_SIZE", self.num_processes * self.num_nodes))

    def local_rank(self) -> int:
        """``LOCAL_RANK``; 0 in the process that starts the others."""
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        """``NODE_RANK`` (or ``GROUP_RANK``), 0 on a single machine."""
        return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))

    def global_rank(self) -> int:
        """``RANK`` in a child fulmen launched; otherwise derived as
        ``node_rank * num_processes + local_rank``."""
        if "RANK" in os.environ and self.launched_by_fulmen:
            return int(os.environ["RANK"])
        return self.node_rank() * self.num_processes + self.local_rank()
