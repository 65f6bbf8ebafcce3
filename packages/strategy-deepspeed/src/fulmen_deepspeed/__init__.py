"""DeepSpeed ZeRO strategies for fulmen.

``Trainer(strategy="deepspeed_stage_2")`` is all most users need; for options build the
strategy yourself::

    from fulmen_deepspeed import DeepSpeedStrategy
    Trainer(strategy=DeepSpeedStrategy(stage=3, config="ds_config.json"), devices=4)

Importing this package is cheap: the strategy (and with it deepspeed) loads on first
access, because the plugin entry point imports this package at discovery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DeepSpeedStrategy": "fulmen_deepspeed.strategy",
    "resolve_config": "fulmen_deepspeed.config",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen_deepspeed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from fulmen_deepspeed.config import resolve_config
    from fulmen_deepspeed.strategy import DeepSpeedStrategy
