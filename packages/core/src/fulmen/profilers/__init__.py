"""Profilers: where the time of a run goes, reported when a stage ends.

``Trainer(profiler="simple" | "advanced" | "pytorch")`` picks one by its registered name
(plugins add more through the ``register_profilers`` hook), or pass an instance. Each
also works on its own: ``with profiler.profile("name"): ...`` then ``profiler.describe()``.

The classes load on first access: every Trainer imports the base class, and only a run
that profiles pays for cProfile/pstats or torch.profiler.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Profiler": "fulmen.profilers.base",
    "PassThroughProfiler": "fulmen.profilers.base",
    "SimpleProfiler": "fulmen.profilers.simple",
    "AdvancedProfiler": "fulmen.profilers.advanced",
    "PyTorchProfiler": "fulmen.profilers.pytorch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen.profilers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from fulmen.profilers.advanced import AdvancedProfiler
    from fulmen.profilers.base import PassThroughProfiler, Profiler
    from fulmen.profilers.pytorch import PyTorchProfiler
    from fulmen.profilers.simple import SimpleProfiler
