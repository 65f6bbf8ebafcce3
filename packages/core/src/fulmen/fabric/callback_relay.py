"""``Fabric.call``: the user's callbacks called through pluggy, like the Trainer's hooks.

A Fabric user names any hook (``fabric.call("on_train_epoch_end", loss=loss)``), so there
are no specifications to check against: every public method of a callback is an
implementation of the hook of its name, and pluggy hands each one only the keyword
arguments it names, the same any-subset rule as the Trainer's hooks. A callback written
for ``(self, loss)`` keeps working when the loop later passes ``loss`` and ``epoch``.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Sequence

import pluggy
from pluggy import HookCallError

from fulmen.errors import FulmenUserCodeError

_PROJECT = "fulmen.fabric.call"


class _CallbackManager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin: Any, name: str):
        if name.startswith("_"):
            return None
        # Looked up on the class: touching instance attributes could run properties.
        if inspect.isfunction(inspect.getattr_static(type(plugin), name, None)):
            return {}
        return None


class CallbackRelay:
    """The callbacks given to one Fabric, registered once, called by hook name."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self._pm = _CallbackManager(_PROJECT)
        # pluggy calls the most recently registered first: register in reverse so the
        # callbacks run in the order the user listed them (as Lightning's Fabric does).
        for index, callback in enumerate(reversed(list(callbacks))):
            self._pm.register(callback, name=f"callback:{type(callback).__qualname__}:{index}:{id(callback)}")

    def call(self, hook_name: str, args: tuple, kwargs: Dict[str, Any]) -> None:
        caller = getattr(self._pm.hook, hook_name, None)
        if caller is None:
            return  # no callback implements it
        if args:
            # Positional arguments cannot be matched by name: each implementation gets them
            # as given (Lightning's behaviour); prefer keywords for the any-subset rule.
            for impl in reversed(caller.get_hookimpls()):
                impl.function(*args, **kwargs)
            return
        try:
            caller(**kwargs)
        except HookCallError as exc:
            raise FulmenUserCodeError(
                f"fabric.call({hook_name!r}, ...): a callback's {hook_name} takes an argument the call "
                f"does not pass ({exc}); callbacks may take any subset of the keyword arguments given"
            ) from exc
