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
    """Base class for callbacks: code that watches or steers a run from outside the model
    (checkpointing, early stopping, logging extras), passed as ``Trainer(callbacks=[...])``.

    Define any lifecycle hook from ``fulmen.hookspecs`` as a method taking any subset of its
    arguments by name; only the hooks a subclass defines are registered. A callback that must
    survive a resume implements :meth:`state_dict` and :meth:`load_state_dict`."""

    @property
    def state_key(self) -> str:
        """The key this callback's :meth:`state_dict` is stored under in a checkpoint's
        ``"callbacks"`` entry; the class's qualified name by default. Override it when two
        instances of one class may run together (include the settings that tell them apart), or
        the second one's state overwrites the first's."""
        return type(self).__qualname__

    def _key_with(self, **settings: Any) -> str:
        """A state key that tells instances with different settings apart."""
        return f"{type(self).__qualname__}{repr(settings)}"

    def state_dict(self) -> Dict[str, Any]:
        """Plain data (numbers, strings, tensors, lists, dicts) to save in every full checkpoint;
        nothing by default. Called on every rank when a checkpoint is built."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when fit resumes from a checkpoint that has an
        entry under :attr:`state_key` (nothing is called for a callback the checkpoint does not know)."""
        pass


Callback._fulmen_hook_base = Callback
