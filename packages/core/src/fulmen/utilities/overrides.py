"""``is_overridden``: whether user code replaced one of a base class's methods (Lightning's
``lightning.pytorch.utilities.is_overridden``).

Callbacks and loops use it to skip work nobody asked for: a hook left as the base class's
no-op needs no call, no data gathered for it, no synchronisation.
"""

from __future__ import annotations

import functools
from typing import Any, Optional


def _function_of(attribute: Any) -> Any:
    """The plain function behind a bound method, a ``functools.wraps`` decorator, a
    ``partial`` or a class/static method, so two spellings of one function compare equal."""
    for _ in range(16):  # decorators nest; a cycle of __wrapped__ must not hang us
        if isinstance(attribute, (classmethod, staticmethod)):
            attribute = attribute.__func__
        elif isinstance(attribute, functools.partial):
            attribute = attribute.func
        elif hasattr(attribute, "__wrapped__"):
            attribute = attribute.__wrapped__
        elif hasattr(attribute, "__func__"):
            attribute = attribute.__func__
        else:
            break
    return getattr(attribute, "__code__", attribute)


def _default_parent(instance: Any) -> type:
    # Imported here: fulmen.utilities must not import the Module/DataModule/Callback
    # modules (and torch.nn with them) just to be importable.
    from fulmen.callbacks.base import Callback
    from fulmen.datamodule import DataModule
    from fulmen.module import Module

    for parent in (Module, DataModule, Callback):
        if isinstance(instance, parent):
            return parent
    raise ValueError(
        f"is_overridden cannot tell which base class {type(instance).__name__} overrides: it is not a "
        "fulmen Module, DataModule or Callback; pass the base class as parent="
    )


def is_overridden(
    method_name: str, instance: Optional[object] = None, parent: Optional[type] = None
) -> bool:
    """True when ``instance`` (its class, or the instance itself) defines ``method_name`` other
    than ``parent`` does, or at all where ``parent`` does not define it. ``parent`` defaults to the fulmen base class ``instance`` derives from
    (``Module``, ``DataModule`` or ``Callback``). ``instance=None`` is ``False``, so
    ``is_overridden("x", trainer.datamodule)`` needs no ``None`` check, as in Lightning."""
    if instance is None:
        return False
    if parent is None:
        parent = _default_parent(instance)
    own = getattr(instance, method_name, None)
    if own is None:
        return False
    base = getattr(parent, method_name, None)
    if base is None:
        # fulmen's base classes leave optional steps and hooks undefined where Lightning's
        # define no-ops (``validation_step``, ``on_train_epoch_end``): defining one is overriding it.
        return True
    return _function_of(own) is not _function_of(base)
