"""Calling lifecycle hooks at O(1) cost per call, whatever the number of callbacks.

The callers of hooks that someone implements are looked up once when objects are attached,
so a hook nobody implements costs one dict miss in the training step.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from fulmen import hookspecs
from fulmen.errors import FulmenConfigError
from fulmen.plugins.manager import FulmenPluginManager, HookCarrier


class HookRelay:
    def __init__(self, manager: FulmenPluginManager) -> None:
        self._pm = manager
        self._attached: List[Any] = []
        self._callers: Dict[str, Any] = {}
        self._refresh()

    def attach(self, module: Any, datamodule: Any, callbacks: Sequence[Any]) -> None:
        """Register for one fit/validate/test/predict. pluggy calls the most recently
        registered first, so the module goes in before the callbacks (reversed), giving:
        callbacks in list order, then the datamodule, the module, then plugin modules."""
        self.detach()
        seen = set()
        for callback in callbacks:
            if id(callback) in seen:
                raise FulmenConfigError(
                    f"the callback {type(callback).__name__} appears twice in callbacks=; pass each object once"
                )
            seen.add(id(callback))
        ordered = [module] + ([datamodule] if datamodule is not None else []) + list(reversed(callbacks))
        for obj in ordered:
            what = "callback" if obj in callbacks else "datamodule" if obj is datamodule else "module"
            if isinstance(obj, HookCarrier):
                self._pm.register_carrier(obj, what)
            else:
                self._pm.register(obj, name=f"{what}:{type(obj).__qualname__}:{id(obj)}")
            self._attached.append(obj)
        self._refresh()

    def detach(self) -> None:
        for obj in self._attached:
            if self._pm.is_registered(obj):
                self._pm.unregister(obj)
        self._attached = []
        self._refresh()

    def _refresh(self) -> None:
        self._callers = {}
        for name in hookspecs.LIFECYCLE_HOOKS:
            caller = getattr(self._pm.hook, name)
            if caller.get_hookimpls():
                self._callers[name] = caller

    def has(self, name: str) -> bool:
        return name in self._callers

    def call(self, name: str, trainer: Any, module: Any, kwargs: Dict[str, Any]) -> None:
        caller = self._callers.get(name)
        if caller is not None:
            caller(trainer=trainer, module=module, **kwargs)
