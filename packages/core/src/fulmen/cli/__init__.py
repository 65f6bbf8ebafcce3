"""fulmen's command line.

``fulmen.cli.main`` is the ``fulmen`` console script (``fulmen plugins``, ``fulmen migrate``,
``fulmen fit``/``validate``/``test``/``predict`` and the commands plugins add).
``fulmen.cli.CLI`` is Lightning's ``LightningCLI`` for a user's own script. ``CLI`` and
``SaveConfigCallback`` load on first access because they need ``jsonargparse``
(``pip install "fulmen[cli]"``), which ``fulmen plugins`` and ``import fulmen`` never import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fulmen.cli.commands import main

_LAZY = {
    "CLI": "fulmen.cli.lightning_style",
    "SaveConfigCallback": "fulmen.cli.config_save",
    "FulmenCLIError": "fulmen.cli.strict",
}

__all__ = ["CLI", "FulmenCLIError", "SaveConfigCallback", "main"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen.cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from fulmen.cli.config_save import SaveConfigCallback
    from fulmen.cli.lightning_style import CLI
    from fulmen.cli.strict import FulmenCLIError
