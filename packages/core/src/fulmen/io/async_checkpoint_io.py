"""``AsyncCheckpointIO``: the loop pauses only to copy tensors to host memory.

The file is written by one background thread. Writes and deletions run in submission order
on that thread, so top-k pruning still deletes an old file only after the new one is
durable. The next save, ``wait()`` and ``teardown()`` wait for the previous work, and a
failure in the background is raised there, never swallowed.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Dict, Optional



from fulmen.errors import FulmenCheckpointError
from fulmen.io.checkpoint_io import CheckpointIO, TorchCheckpointIO
from fulmen.utilities.apply import apply_to_tensors


def _snapshot(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """A copy whose tensors live in host memory and no longer change with training."""
    return apply_to_tensors(checkpoint, lambda t: t.detach().to("cpu", copy=True))


class AsyncCheckpointIO(CheckpointIO):
    """Write checkpoints on a background thread (``plugins=["async"]``, or wrapping your own
    ``checkpoint_io``): the loop pauses only to copy tensors to host memory.

    At most one save is in flight; writes and deletions run in submission order, a deletion is
    skipped once any write failed (an older file may be the last good one), and a background
    failure is raised by the next save, :meth:`wait` or :meth:`teardown`."""

    def __init__(self, checkpoint_io: Optional[CheckpointIO] = None) -> None:
        self.checkpoint_io = checkpoint_io or TorchCheckpointIO()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fulmen-ckpt")
        self._pending: list = []
        self._error: Optional[BaseException] = None
        self._write_failed = False

    def _raise_failure(self) -> None:
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            exc = future.exception()
            if exc is not None and self._error is None:
                self._error = exc
        if self._error is not None:
            error, self._error = self._error, None
            raise FulmenCheckpointError(f"a background checkpoint write failed: {error}") from error

    def wait(self) -> None:
        """Block until every submitted write and deletion finished; raise the first failure."""
        for future in list(self._pending):
            future.exception()  # waits
        self._raise_failure()

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Wait for the previous save, snapshot ``checkpoint``'s tensors to host memory, and queue
        the write; returns before the file exists."""
        self.wait()  # at most one save in flight: bounded host memory, ordered files
        snapshot = _snapshot(checkpoint)
        self._pending.append(self._executor.submit(self._write, snapshot, path, storage_options))

    def _write(self, snapshot: Dict[str, Any], path: Any, storage_options: Optional[Any]) -> None:
        try:
            self.checkpoint_io.save_checkpoint(snapshot, path, storage_options=storage_options)
        except BaseException:
            self._write_failed = True  # keep every older file: it may be the last good one
            raise

    def remove_checkpoint(self, path: Any) -> None:
        """Queue the deletion behind every pending write; skipped if any write failed."""
        def remove_if_all_writes_succeeded():
            if not self._write_failed:
                self.checkpoint_io.remove_checkpoint(path)

        self._raise_failure()
        self._pending.append(self._executor.submit(remove_if_all_writes_succeeded))

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None) -> Dict[str, Any]:
        """Wait for pending writes (the file may be one of them), then read through the wrapped IO."""
        self.wait()
        return self.checkpoint_io.load_checkpoint(path, map_location=map_location)

    def teardown(self) -> None:
        """Wait for every pending write and deletion, raise the first failure, and tear down the wrapped IO."""
        try:
            self.wait()
        finally:
            self.checkpoint_io.teardown()

