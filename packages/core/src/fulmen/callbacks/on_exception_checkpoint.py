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
    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: Optional[str | os.PathLike] = None, filename: str = "on_exception") -> None:
        self.dirpath = str(dirpath) if dirpath is not None else None
        self.filename = filename
        self.saved_path: Optional[str] = None

    @property
    def ckpt_path(self) -> str:
        return str(Path(self.dirpath) / (self.filename + self.FILE_EXTENSION))

    def setup(self, trainer) -> None:
        if self.dirpath is None:
            base = trainer.log_dir if trainer.loggers else trainer.default_root_dir
            self.dirpath = str(Path(base) / "checkpoints")

    def on_exception(self, trainer, exception) -> None:
        if trainer.stage != "fit" or trainer.module is None or not trainer.optimizers:
            return
        trainer.save_checkpoint(self.ckpt_path)
        trainer.strategy.checkpoint_io.teardown()
        self.saved_path = self.ckpt_path
        trainer.print(f"OnExceptionCheckpoint: {type(exception).__name__} ended training; saved {self.ckpt_path}")
