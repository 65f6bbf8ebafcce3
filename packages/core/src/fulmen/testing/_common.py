"""What every conformance check shares: its error, how a spec becomes an object, exact
comparison of nested checkpoint-like data."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Dict, Iterator, Optional

import torch


class ConformanceError(AssertionError):
    """A plugin broke a rule of fulmen's contract; the message names the rule and the fix."""


class ConformanceSkip(Exception):
    """The check cannot run here (for example the accelerator is absent); outside pytest."""


def fail(kind: str, spec: Any, rule: str, detail: str) -> ConformanceError:
    """A ConformanceError naming the kind, the object under test, the broken rule and what was seen."""
    return ConformanceError(f"[fulmen conformance] {kind} {describe(spec)}: {rule}\n  {detail}")


def skip(reason: str) -> None:
    """``pytest.skip`` under pytest, ``ConformanceSkip`` elsewhere."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - fulmen.testing is normally used under pytest
        raise ConformanceSkip(reason) from None
    pytest.skip(reason)


def describe(spec: Any) -> str:
    """A readable name for a spec (a registered name, a class or a factory) in messages."""
    if isinstance(spec, str):
        return repr(spec)
    if isinstance(spec, type):
        return f"{spec.__module__}.{spec.__qualname__}"
    name = getattr(spec, "__qualname__", None) or type(spec).__qualname__
    return f"{getattr(spec, '__module__', '?')}.{name}"


def registry():
    """The registry a Trainer created now would see (this environment's plugins)."""
    from fulmen.plugins import manager

    return manager.build().registry


def factory_of(kind: str, spec: Any, base: Optional[type] = None) -> Callable[..., Any]:
    """``spec`` → a function making a fresh object per call.

    ``spec`` is a registered name (``"my_strategy"``: the way users ask for it), an import
    path (``"my_pkg.module:MyClass"``), a class, or a function returning a new object. An
    instance is refused: several checks need fresh, independent objects.
    """
    if isinstance(spec, str):
        if ":" in spec:
            from fulmen.plugins.discovery import import_object

            return factory_of(kind, import_object(spec), base)
        reg = registry()
        entry = reg.get(kind, spec)  # FulmenConfigError listing the available names
        return entry.factory
    if base is not None and isinstance(spec, base):
        raise ConformanceError(
            f"[fulmen conformance] pass the {kind} as a registered name, 'module:attr', a class or a "
            f"factory function, not an instance ({spec!r}): the checks need fresh objects"
        )
    if callable(spec):
        return spec
    raise ConformanceError(f"[fulmen conformance] {spec!r} is not a {kind} name, import path, class or factory")


def import_path(spec: Any) -> Optional[str]:
    """A string a subprocess can resolve to the same spec, or None."""
    if isinstance(spec, str):
        return spec
    module = getattr(spec, "__module__", None)
    qualname = getattr(spec, "__qualname__", "")
    if module and module != "__main__" and "<locals>" not in qualname:
        return f"{module}:{qualname}"
    return None


def plain(value: Any) -> Any:
    """Checkpoint-like data with tensors gathered (DTensor ``full_tensor``) and on the CPU."""
    if hasattr(value, "full_tensor") and callable(value.full_tensor):
        value = value.full_tensor()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """Where two nested structures differ (exactly: dtype, shape, every bit), or None."""
    where = path or "<root>"
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where}: {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype:
            return f"{where}: dtype {a.dtype} vs {b.dtype}"
        if a.shape != b.shape:
            return f"{where}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        if not torch.equal(a.cpu(), b.cpu()) and not (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                                       and torch.equal(a.nan_to_num(), b.nan_to_num())):
            diff = (a.cpu().double() - b.cpu().double()).abs().max().item() if a.is_floating_point() else "n/a"
            return f"{where}: values differ (max abs difference {diff})"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(map(str, set(a) ^ set(b)))} are in only one of them"
        for key in a:
            found = first_difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    if type(a) is not type(b) or a != b:
        return f"{where}: {a!r} vs {b!r}"
    return None


@contextlib.contextmanager
def environment(set_vars: Dict[str, str], clear_prefixes=(), clear_names=()) -> Iterator[None]:
    """Temporarily set variables and remove others; everything is put back afterwards."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(tuple(clear_prefixes)) or name in clear_names:
                del os.environ[name]
        os.environ.update({k: str(v) for k, v in set_vars.items()})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The caller's random streams are unchanged by an in-process check."""
    from fulmen.utilities import rng

    state = rng.capture()
    try:
        yield
    finally:
        rng.restore(state)
