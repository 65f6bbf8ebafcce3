"""Profilers: where the time of a run goes, reported when a stage ends.

``Trainer(profiler="simple" | "advanced" | "pytorch")`` picks one by its registered name
(plugins add more through the ``register_profilers`` hook), or pass an instance. Each
also works on its own: ``with profiler.profile("name"): ...`` then ``profiler.describe()``.
"""

from fulmen.profilers.advanced import AdvancedProfiler
from fulmen.profilers.base import PassThroughProfiler, Profiler
from fulmen.profilers.pytorch import PyTorchProfiler
from fulmen.profilers.simple import SimpleProfiler

__all__ = ["AdvancedProfiler", "PassThroughProfiler", "Profiler", "PyTorchProfiler", "SimpleProfiler"]
