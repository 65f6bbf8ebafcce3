"""``OnExceptionCheckpoint``: whatever ends training with an exception, save first.

An OOM in step 9,000 should not cost 9,000 steps. The file is a complete checkpoint, so
``fit(ckpt_path=...)`` continues from it exactly like from any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from fulmen.callbacks.base import Callback


class OnExceptionCheckpoint(Callback):
    """Save a full checkpoint when fit ends with an exception (an out-of-memory error, a
    ``KeyboardInterrupt``), so the run can resume from the last completed step with
    ``fit(ckpt_path=...)``.

    Args:
        dirpath: Where to write; by default ``checkpoints/`` under the first logger's directory
            (or ``default_root_dir`` without loggers).
        filename: The file name without the ``.ckpt`` extension."""

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: Optional[str | os.PathLike] = None, filename: str = "on_exception") -> None:
        self.dirpath = str(dirpath) if dirpath is not None else None
        self.filename = filename
        self.saved_path: Optional[str] = None

    @property
    def ckpt_path(self) -> str:
        """The path the checkpoint is written to, ``dirpath/filename.ckpt``."""
        return str(Path(self.dirpath) / (self.filename + self.FILE_EXTENSION))

    def setup(self, trainer) -> None:
        """Choose the default directory once the loggers know theirs."""
        if self.dirpath is None:
            base = trainer.log_dir if trainer.loggers else trainer.default_root_dir
            self.dirpath = str(Path(base) / "checkpoints")

    def on_exception(self, trainer, exception) -> None:
        """Write the checkpoint and wait until it is on disk, during fit only and once optimizers
        exist; the exception is re-raised by the Trainer afterwards."""
        if trainer.stage != "fit" or trainer.module is None or not trainer.optimizers:
            return
        trainer.save_checkpoint(self.ckpt_path)
        trainer.strategy.checkpoint_io.teardown()
        self.saved_path = self.ckpt_path
        trainer.print(f"OnExceptionCheckpoint: {type(exception).__name__} ended training; saved {self.ckpt_path}")
