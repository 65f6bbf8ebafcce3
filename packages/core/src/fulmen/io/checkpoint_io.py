"""Reading and writing checkpoint files; the only place that calls ``torch.save``/``load``.

Loading always uses ``weights_only=True``: a checkpoint is data, and a file downloaded from
somewhere must never be able to run code (pickle's ``__reduce__``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from fulmen.errors import FulmenCheckpointError
from fulmen.io.atomic import atomic_write

PathLike = Union[str, os.PathLike]


class CheckpointIO:
    """Base class: how a checkpoint dict becomes bytes somewhere, and back."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        raise NotImplementedError

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None) -> Dict[str, Any]:
        raise NotImplementedError

    def remove_checkpoint(self, path: PathLike) -> None:
        Path(path).unlink(missing_ok=True)

    def teardown(self) -> None:
        pass


class TorchCheckpointIO(CheckpointIO):
    """``torch.save`` through an atomic, fsynced rename; ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options (got {storage_options!r}); "
                "pass a CheckpointIO plugin that understands them"
            )
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None) -> Dict[str, Any]:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        if path.is_dir():
            raise FulmenCheckpointError(
                f"checkpoint {str(path)!r} is a directory; this is a sharded checkpoint that "
                "needs the strategy that wrote it (for example fulmen-strategy-fsdp)"
            )
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not zipfile.is_zipfile(path):
                # Not even an archive: random bytes, not a smuggled object.
                raise FulmenCheckpointError(
                    f"cannot read checkpoint {str(path)!r}: it is not a torch checkpoint "
                    f"(UnpicklingError: {str(exc).splitlines()[0][:200]})"
                ) from None
            raise FulmenCheckpointError(
                f"refusing to load {str(path)!r}: it contains objects that are not plain data "
                f"({exc}). fulmen loads checkpoints with weights_only=True so that a file "
                "cannot run code; if you trust this file, load it yourself with "
                "torch.load(path, weights_only=False) and save its tensors again"
            ) from None
        except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as exc:
            # Corrupted bytes surface as many error types (UnicodeDecodeError is a ValueError).
            raise FulmenCheckpointError(
                f"cannot read checkpoint {str(path)!r}: it is truncated, corrupted or not a "
                f"torch checkpoint ({type(exc).__name__}: {exc})"
            ) from None
