"""Reading and writing checkpoint files; the only place that calls ``torch.save``/``load``.

Loading always uses ``weights_only=True``: a checkpoint is data, and a file downloaded from
somewhere must never be able to run code (pickle's ``__reduce__``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from fulmen.errors import FulmenCheckpointError
from fulmen.io import integrity
from fulmen.io.atomic import atomic_write
from fulmen.io.integrity import HashingWriter

PathLike = Union[str, os.PathLike]


class CheckpointIO:
    """Base class: how a checkpoint dict becomes bytes somewhere, and back."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` (plain data and tensors) at ``path``, replacing what was there.

        Called on global rank zero only by the default strategies. A failed write must leave the
        previous file at ``path`` intact and raise, here or at the latest from :meth:`teardown`.
        ``storage_options`` is passed through from ``trainer.save_checkpoint`` for IO plugins that
        understand it (credentials, a bucket); implementations that take none should refuse it."""
        raise NotImplementedError

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None) -> Dict[str, Any]:
        """Read the dict that :meth:`save_checkpoint` wrote at ``path``, with tensors on
        ``map_location`` (the CPU when ``None``). Called on every rank. A missing path raises
        ``FileNotFoundError``; damaged or unsafe contents raise ``FulmenCheckpointError``."""
        raise NotImplementedError

    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint at ``path``, quietly if it is gone already; ``ModelCheckpoint``
        calls it (through the strategy, on rank zero) for files that fell out of its top-k."""
        Path(path).unlink(missing_ok=True)

    def teardown(self) -> None:
        """Finish outstanding work (background writes) and raise the first failure; called after
        every fit/validate/test/predict, so no write is lost when a stage ends."""
        pass


class TorchCheckpointIO(CheckpointIO):
    """``torch.save`` through an atomic, fsynced rename with a SHA-256 footer;
    ``torch.load(weights_only=True)`` whose result is returned only once the footer's checksum
    matched (checked by another thread during the load).

    ``safe_globals`` is the opt-in for files that hold your own classes: list them and they
    (and only they) may be rebuilt while loading. ``verify=False`` reads files that have no
    fulmen footer (for example a plain ``torch.save`` from another tool). ``mmap=True`` maps
    the tensors' bytes instead of reading them into memory, for a reader that wants only the
    small entries of a large checkpoint (the CLI's hyperparameters); the checksum is still
    verified, by one streaming pass.
    """

    def __init__(self, verify: bool = True, safe_globals: Optional[Sequence[Any]] = None, mmap: bool = False) -> None:
        self.verify = verify
        self.safe_globals = list(safe_globals or ())
        self.mmap = mmap

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        """``torch.save`` into a temporary file next to ``path``, a SHA-256 footer, fsync, then a
        rename over ``path``: a crash never leaves a half-written file under the real name.
        Refuses ``storage_options``."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options (got {storage_options!r}); "
                "pass a CheckpointIO plugin that understands them"
            )

        def write(handle) -> None:
            writer = HashingWriter(handle)
            torch.save(checkpoint, writer)
            handle.write(writer.footer())

        atomic_write(path, write)

    def load_checkpoint(self, path: PathLike, map_location: Optional[Any] = None) -> Dict[str, Any]:
        """``torch.load`` with ``weights_only=True`` (allowing only ``safe_globals``), accepted
        only if the footer's checksum matches (unless ``verify=False``). Truncated, corrupted or
        code-carrying files raise ``FulmenCheckpointError`` naming what is wrong and what to do;
        a directory (a sharded checkpoint) is refused with the way to consolidate it."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        if path.is_dir():
            raise FulmenCheckpointError(
                f"checkpoint {str(path)!r} is a directory; this is a sharded checkpoint that "
                "needs the strategy that wrote it (for example fulmen-strategy-fsdp), or convert it "
                "into one file first: fulmen-fsdp consolidate DIR OUT.ckpt"
            )
        allowed = torch.serialization.safe_globals(self.safe_globals) if self.safe_globals else contextlib.nullcontext()

        def load() -> Dict[str, Any]:
            with allowed:
                return torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=self.mmap)

        try:
            return integrity.verified_load(path, load) if self.verify else load()
        except pickle.UnpicklingError as exc:
            if not zipfile.is_zipfile(path):
                # Not even an archive: random bytes, not a smuggled object.
                raise FulmenCheckpointError(
                    f"cannot read checkpoint {str(path)!r}: it is not a torch checkpoint "
                    f"(UnpicklingError: {str(exc).splitlines()[0][:200]})"
                ) from None
            raise FulmenCheckpointError(
                f"refusing to load {str(path)!r}: it contains objects that are not plain data "
                f"({_unsafe_detail(exc)}). fulmen loads checkpoints with weights_only=True "
                "so that a file cannot run code. If you trust this file, allow its classes "
                "explicitly: TorchCheckpointIO(safe_globals=[TheClass]) (Trainer(plugins=[...]) or "
                "load_from_checkpoint(..., safe_globals=[...])), or load it yourself with "
                "torch.load(path, weights_only=False)"
            ) from None
        except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as exc:
            # Corrupted bytes surface as many error types (UnicodeDecodeError is a ValueError).
            raise FulmenCheckpointError(
                f"cannot read checkpoint {str(path)!r}: it is truncated, corrupted or not a "
                f"torch checkpoint ({type(exc).__name__}: {exc})"
            ) from None


def _unsafe_detail(exc: BaseException) -> str:
    """The line of torch's long message that names the class it refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "GLOBAL" in line:
            return line.replace("WeightsUnpickler error: ", "")[:300]
    return (lines[-1] if lines else type(exc).__name__)[:300]
