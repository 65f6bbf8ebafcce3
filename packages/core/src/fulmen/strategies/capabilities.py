"""Optional strategy abilities, expressed as protocols rather than flags or name checks.

Code that wants an ability asks ``isinstance(strategy, SupportsNoBackwardSync)``; a third
party strategy gains it by defining the method, with no registration anywhere. A strategy
that lacks one gets a clear error naming what it lacks, never a silently ignored option.
"""

from __future__ import annotations

from typing import ContextManager, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class SupportsNoBackwardSync(Protocol):
    """Can skip the gradient all-reduce on micro-batches that do not step the optimizer."""

    def no_backward_sync(self, module: nn.Module, enabled: bool) -> ContextManager:
        """A context in which backward accumulates gradients locally, without the all-reduce."""


@runtime_checkable
class SupportsSyncBatchNorm(Protocol):
    """Can synchronise batch-norm statistics across processes (``sync_batchnorm=True``).

    ``enable_sync_batchnorm`` is called before ``setup_module``; it raises a
    ``FulmenConfigError`` if the strategy cannot do it on this hardware.
    """

    def enable_sync_batchnorm(self) -> None:
        """Turn BatchNorm layers into synchronised ones at ``setup_module``, or raise why not."""
