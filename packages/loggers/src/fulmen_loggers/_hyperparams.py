"""Hyperparameters as the backends can take them: flat ``key/sub`` names with scalar values
(MLflow params, TensorBoard's HParams), or nested plain data (W&B config).

Users hand ``log_hyperparams`` anything: nested dicts, an ``argparse.Namespace``, tensors,
classes, paths. Every backend refuses some of that, and a refusal on the delivery thread is
a lost record, so the values are made plain here, on the training thread, once. The flat
form also gives a stable digest, which is how a resumed run knows it already sent them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

_NOT_A_SCALAR = object()


def mapping_items(value: Any) -> Optional[Iterable[Tuple[Any, Any]]]:
    """The ``(key, value)`` pairs of a mapping or an ``argparse.Namespace``; None for
    anything else (a leaf, or hyperparameters that are not keyed at all)."""
    import argparse

    if isinstance(value, argparse.Namespace):
        return vars(value).items()
    if isinstance(value, Mapping):
        return value.items()
    return None


def _item(value: Any) -> Any:
    """A one-element tensor or numpy value as a Python number, else ``_NOT_A_SCALAR``."""
    item = getattr(value, "item", None)
    if not callable(item):
        return _NOT_A_SCALAR
    numel = getattr(value, "numel", None)
    try:
        size = numel() if callable(numel) else getattr(value, "size", None)
        if size == 1:
            out = item()
            if isinstance(out, (bool, int, float, str)):
                return out
    except Exception:
        pass
    return _NOT_A_SCALAR


def _scalar(value: Any) -> Any:
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, str)):
        return value
    item = _item(value)
    if item is not _NOT_A_SCALAR:
        return item
    if isinstance(value, (list, tuple, set)):
        try:
            return json.dumps([_plain(v) for v in value])
        except (TypeError, ValueError):
            return str(list(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}".lstrip(".")
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return _scalar(value)


def flatten_params(params: Mapping[str, Any], sep: str = "/") -> Dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}, "layers": [64, 64]}`` → ``{"optimizer/lr": 0.1, "layers": "[64, 64]"}``.

    Nested mappings (and ``argparse.Namespace``) become ``sep``-joined keys; leaves become
    bool/int/float/str (lists as JSON, ``None`` as ``"None"``, tensors and numpy scalars as
    their value, classes and functions as their qualified name, anything else as ``str``).
    """
    out: Dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        items = mapping_items(value)
        if items is None:
            out[prefix] = _scalar(value)
            return
        items = list(items)
        if not items and prefix:
            out[prefix] = "{}"
        for key, child in items:
            walk(f"{prefix}{sep}{key}" if prefix else str(key), child)

    walk("", params)
    return out


def nested_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The same values as nested plain data (for backends that keep structure, like W&B)."""
    out = _plain(dict(mapping_items(params) or {}))
    return out if isinstance(out, dict) else {}


def params_digest(flat: Mapping[str, Any]) -> str:
    """A short, order-independent fingerprint of flattened hyperparameters. Kept in the
    logger's checkpoint state, so a resumed run that logs the same values sends nothing."""
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]
