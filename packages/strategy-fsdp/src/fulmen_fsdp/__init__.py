"""Fully Sharded Data Parallel (FSDP2) strategies for fulmen.

``Trainer(strategy="fsdp")`` or ``Fabric(strategy="fsdp")`` is all most users need; for
options build the strategy yourself::

    from fulmen_fsdp import FSDPStrategy
    Trainer(strategy=FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full"), devices=4)

Importing this package is cheap: the strategy, the checkpoint helpers and the consolidation
function load on first access (the plugin entry point imports this package at discovery).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "FSDPStrategy": "fulmen_fsdp.strategy",
    "mixed_precision_policy": "fulmen_fsdp.strategy",
    "consolidate_checkpoint": "fulmen_fsdp.checkpoint",
    "load_sharded_checkpoint": "fulmen_fsdp.checkpoint",
    "is_sharded_checkpoint": "fulmen_fsdp.checkpoint",
    "ShardedTensorRef": "fulmen_fsdp.checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen_fsdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from fulmen_fsdp.checkpoint import (
        ShardedTensorRef,
        consolidate_checkpoint,
        is_sharded_checkpoint,
        load_sharded_checkpoint,
    )
    from fulmen_fsdp.strategy import FSDPStrategy, mixed_precision_policy
