"""Helpers that Lightning programs import from ``lightning.pytorch.utilities`` (and its
``rank_zero`` module), under the same names.

They load on first access, as ``fulmen``'s own names do, so importing one submodule of this
package (``fulmen.utilities.seed``) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "rank_zero_only": "fulmen.utilities.rank_zero",
    "rank_zero_info": "fulmen.utilities.rank_zero",
    "rank_zero_debug": "fulmen.utilities.rank_zero",
    "rank_zero_warn": "fulmen.utilities.rank_zero",
    "rank_zero_deprecation": "fulmen.utilities.rank_zero",
    "is_overridden": "fulmen.utilities.overrides",
    "cli_lightning_logo": "fulmen.utilities.banner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # AttributeError lets ``from fulmen.utilities import seed`` find the submodule
        raise AttributeError(f"module 'fulmen.utilities' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | set(globals()))


if TYPE_CHECKING:  # pragma: no cover
    from fulmen.utilities.banner import cli_lightning_logo
    from fulmen.utilities.overrides import is_overridden
    from fulmen.utilities.rank_zero import (
        rank_zero_debug,
        rank_zero_deprecation,
        rank_zero_info,
        rank_zero_only,
        rank_zero_warn,
    )
