"""Capturing ``__init__`` arguments as plain data that a weights-only checkpoint can hold."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, Iterable, Optional

from fulmen.errors import FulmenWarning

_PLAIN = (bool, int, float, str, type(None))


class AttributeDict(dict):
    """``hparams.lr`` and ``hparams["lr"]`` both work."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"hparams has no {key!r}; it has {sorted(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def to_plain(value: Any) -> Any:
    """The value as nested dicts/lists of scalars, or raise TypeError naming the culprit."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    raise TypeError(type(value).__name__)


def collect_init_args(frame, names: Iterable[str], ignore: Optional[Iterable[str]]) -> Dict[str, Any]:
    """The arguments of the ``__init__`` running in ``frame`` (plus its ``**kwargs``)."""
    info = inspect.getargvalues(frame)
    values: Dict[str, Any] = {}
    for arg in info.args[1:]:  # skip self
        values[arg] = info.locals[arg]
    if info.varargs and info.locals.get(info.varargs):
        values[info.varargs] = list(info.locals[info.varargs])
    if info.keywords:
        values.update(info.locals.get(info.keywords) or {})
    names = list(names)
    if names:
        unknown = [n for n in names if n not in values]
        if unknown:
            raise ValueError(
                f"save_hyperparameters({', '.join(map(repr, names))}): {unknown} are not "
                f"arguments of __init__ (which has {sorted(values)})"
            )
        values = {n: values[n] for n in names}
    for name in ignore or ():
        values.pop(name, None)
    return values


def plain_hparams(values: Dict[str, Any], owner: str) -> Dict[str, Any]:
    """Keep what is plain data; warn about the rest instead of writing pickles."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        try:
            out[key] = to_plain(value)
        except TypeError as exc:
            warnings.warn(
                f"{owner}.save_hyperparameters(): argument {key!r} holds a {exc} object, "
                "which is not plain data and is left out of hparams and checkpoints "
                f"(checkpoints load with weights_only=True). Pass ignore=[{key!r}] to "
                "silence this, and give it again to load_from_checkpoint(..., "
                f"{key}=...)",
                FulmenWarning,
                stacklevel=4,
            )
    return out
