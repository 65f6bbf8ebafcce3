"""Optional strategy abilities, expressed as protocols rather than flags or name checks.

Code that wants an ability asks ``isinstance(strategy, SupportsNoBackwardSync)``; a third
party strategy gains it by defining the method, with no registration anywhere.
"""

from __future__ import annotations

from typing import ContextManager, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class SupportsNoBackwardSync(Protocol):
    """Can skip the gradient all-reduce on micro-batches that do not step the optimizer."""

    def no_backward_sync(self, module: nn.Module, enabled: bool) -> ContextManager: ...


@runtime_checkable
class ShardsModule(Protocol):
    """Holds only a shard of each parameter per process; checkpoints need its help."""

    def module_init_context(self, empty_init: bool) -> ContextManager: ...
