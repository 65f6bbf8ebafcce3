"""fulmen: a PyTorch training framework with a minimal core and pluggable backends.

The public names load on first access, so ``import fulmen`` costs little more than
``import torch``, and plugin discovery waits until the first Trainer or Fabric.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Trainer": "fulmen.trainer.trainer",
    "Fabric": "fulmen.fabric.fabric",
    "Module": "fulmen.module",
    "DataModule": "fulmen.datamodule",
    "Callback": "fulmen.callbacks.base",
    "seed_everything": "fulmen.utilities.seed",
    "hookimpl": "fulmen.hookspecs",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


_SUBPACKAGES = frozenset(
    {"accelerators", "callbacks", "environments", "errors", "io", "loggers", "plugins", "precision", "profilers", "strategies", "utilities", "dataloading", "hookspecs"}
)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:  # ``fulmen.callbacks.ModelCheckpoint`` without a separate import
        value = importlib.import_module(f"fulmen.{name}")
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from fulmen.callbacks.base import Callback
    from fulmen.datamodule import DataModule
    from fulmen.fabric.fabric import Fabric
    from fulmen.hookspecs import hookimpl
    from fulmen.module import Module
    from fulmen.trainer.trainer import Trainer
    from fulmen.utilities.seed import seed_everything
