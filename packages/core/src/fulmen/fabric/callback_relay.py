"""``Fabric.call``: the user's callbacks called through pluggy, like the Trainer's hooks.

A Fabric user names any hook (``fabric.call("on_train_epoch_end", loss=loss)``), so there
are no specifications to check against: every public callable of a callback (methods,
static methods, callables set on the instance) implements the hook of its name. pluggy
keeps the implementations and their argument names; each one is handed only the keyword
arguments it names (the any-subset rule of the Trainer's hooks), or all of them when it
takes ``**kwargs``. A callback written for ``(self, loss)`` keeps working when the loop
later passes ``loss`` and ``epoch``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Sequence

import pluggy

from fulmen.errors import FulmenConfigError, FulmenUserCodeError

_PROJECT = "fulmen.fabric.call"


def _is_public_callable(plugin: Any, name: str) -> bool:
    if name.startswith("_"):
        return False
    # Looked up without running descriptors: touching properties could run user code.
    static = inspect.getattr_static(plugin, name, None)
    if isinstance(static, (staticmethod, classmethod)) or inspect.isfunction(static):
        return True
    return name in getattr(plugin, "__dict__", {}) and callable(static)


class _CallbackManager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin: Any, name: str):
        return {} if _is_public_callable(plugin, name) else None


def _takes_var_keywords(function: Callable[..., Any]) -> bool:
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False


class CallbackRelay:
    """The callbacks given to one Fabric, registered once, called by hook name."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self._pm = _CallbackManager(_PROJECT)
        seen = set()
        for callback in callbacks:
            if id(callback) in seen:
                raise FulmenConfigError(
                    f"the callback {type(callback).__name__} appears twice in callbacks=; pass each object once"
                )
            seen.add(id(callback))
        # pluggy lists the most recently registered last and calls from the end: register in
        # reverse so that, read from the end, the callbacks come in the user's order.
        for index, callback in enumerate(reversed(list(callbacks))):
            self._pm.register(callback, name=f"callback:{type(callback).__qualname__}:{index}:{id(callback)}")
        self._var_keywords: Dict[int, bool] = {}

    def call(self, hook_name: str, args: tuple, kwargs: Dict[str, Any]) -> None:
        caller = getattr(self._pm.hook, hook_name, None)
        if caller is None:
            return  # no callback implements it
        for impl in reversed(caller.get_hookimpls()):
            function = impl.function
            if args:
                # Positional arguments cannot be matched by name: each implementation gets
                # them as given (Lightning's behaviour); prefer keywords for the any-subset rule.
                function(*args, **kwargs)
                continue
            key = id(function)
            if key not in self._var_keywords:
                self._var_keywords[key] = _takes_var_keywords(function)
            if self._var_keywords[key]:
                function(**kwargs)
                continue
            missing = [name for name in impl.argnames if name not in kwargs]
            if missing:
                raise FulmenUserCodeError(
                    f"fabric.call({hook_name!r}, ...): {type(impl.plugin).__name__}.{hook_name} takes "
                    f"{missing}, which the call does not pass (it passes {sorted(kwargs)}); a callback may "
                    "take any subset of the keyword arguments given"
                )
            function(**{name: kwargs[name] for name in impl.argnames})
