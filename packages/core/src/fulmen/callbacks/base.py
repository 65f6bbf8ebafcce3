"""``fulmen.Callback``: subclass it and define any hooks from ``fulmen.hookspecs``.

A hook is a plain method taking any subset of its documented arguments, by name::

    class PrintLoss(Callback):
        def on_train_batch_end(self, trainer, outputs):
            ...

Only the hooks a subclass defines are registered, so an unused hook costs nothing per step.
A callback with state implements ``state_dict``/``load_state_dict``; the state is saved in
checkpoints under ``state_key`` (the class name unless two instances need telling apart).
"""

from __future__ import annotations

from typing import Any, Dict

from fulmen.plugins.manager import HookCarrier


class Callback(HookCarrier):
    @property
    def state_key(self) -> str:
        return type(self).__qualname__

    def _key_with(self, **settings: Any) -> str:
        """A state key that tells instances with different settings apart."""
        return f"{type(self).__qualname__}{repr(settings)}"

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


Callback._fulmen_hook_base = Callback
