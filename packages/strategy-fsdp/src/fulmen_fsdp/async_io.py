"""The checkpoint IO an FSDP strategy uses while asynchronous sharded saves may be in flight."""

from __future__ import annotations

from typing import Any, Callable

from fulmen.io.checkpoint_io import CheckpointIO


class FinishingCheckpointIO(CheckpointIO):
    """The strategy's checkpoint IO during asynchronous sharded saves: ``teardown`` (which
    the Trainer calls to make checkpoints durable, for example before a preemption exit)
    and ``load_checkpoint`` first finish the save in flight. Everything else is the wrapped
    IO's."""

    def __init__(self, checkpoint_io: CheckpointIO, finish: Callable[[], None]) -> None:
        self.checkpoint_io = checkpoint_io
        self._finish = finish

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """Write through the wrapped IO (full checkpoints; sharded ones bypass checkpoint IO)."""
        self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path, map_location=None):
        """Finish the save in flight, then read through the wrapped IO."""
        self._finish()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path) -> None:
        """Finish the save in flight, then delete through the wrapped IO."""
        self._finish()
        self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        """Finish the save in flight, then tear down the wrapped IO."""
        try:
            self._finish()
        finally:
            self.checkpoint_io.teardown()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("checkpoint_io")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)
