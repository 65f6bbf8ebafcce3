"""One machine, processes started by fulmen itself (or just this one)."""

from __future__ import annotations

import os

from fulmen.environments.base import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    name = "local"
    detection_priority = -100

    @classmethod
    def detect(cls) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))
