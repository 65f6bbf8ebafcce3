"""Lightning's logger constructor arguments that every fulmen logger shares.

Lightning names the folder that holds the experiment folders ``save_dir`` in the Trainer's
loggers and ``root_dir`` in Fabric's; it is the same folder, so fulmen's loggers take either
(code written for either Lightning API runs unchanged) and refuse both at once rather than
guess which one was meant. A ``prefix`` is joined to metric names with ``-``, as Lightning
does (``prefix="train"`` logs ``train-loss``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from fulmen.errors import FulmenConfigError

PREFIX_SEPARATOR = "-"

PathLike = Union[str, os.PathLike]


def resolve_save_dir(logger: str, save_dir: Optional[PathLike], root_dir: Optional[PathLike], default: PathLike = ".") -> Path:
    """The folder ``save_dir`` or ``root_dir`` names (``default`` when neither is given)."""
    if save_dir is not None and root_dir is not None:
        raise FulmenConfigError(
            f"{logger}(save_dir={str(save_dir)!r}, root_dir={str(root_dir)!r}) names the log folder twice; "
            "pass one of them (save_dir as Lightning's Trainer loggers, or root_dir as Lightning Fabric's)"
        )
    chosen = save_dir if save_dir is not None else root_dir
    return Path(chosen if chosen is not None else default)


def prefixed(prefix: str, name: str) -> str:
    """``name`` with Lightning's ``prefix-`` in front (unchanged for an empty prefix)."""
    return f"{prefix}{PREFIX_SEPARATOR}{name}" if prefix else name
