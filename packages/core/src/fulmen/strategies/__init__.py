"""Strategies and the contract a third-party strategy implements.

Subclass :class:`Strategy` (one process) or :class:`DDPStrategy` (one process per device on
``torch.distributed``) and register the class through ``register_strategies``. The DDP
classes are imported on first use, so ``import fulmen`` does not load torch.distributed.
"""

from typing import Any

from fulmen.strategies.base import Strategy
from fulmen.strategies.capabilities import SupportsNoBackwardSync, SupportsSyncBatchNorm
from fulmen.strategies.launcher import Launcher, runs_in_workers
from fulmen.strategies.single_device import SingleDeviceStrategy

__all__ = [
    "Strategy",
    "SingleDeviceStrategy",
    "DDPStrategy",
    "SupportsNoBackwardSync",
    "SupportsSyncBatchNorm",
    "Launcher",
    "runs_in_workers",
]


def __getattr__(name: str) -> Any:
    if name == "DDPStrategy":
        from fulmen.strategies.ddp import DDPStrategy

        return DDPStrategy
    raise AttributeError(f"module 'fulmen.strategies' has no attribute {name!r}")
