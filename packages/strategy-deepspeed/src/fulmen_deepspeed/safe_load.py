"""DeepSpeed's checkpoint files read with ``torch.load(weights_only=True)``.

DeepSpeed unpickles its files with ``weights_only=False``, so a planted or swapped file runs
whatever its pickle says (``__reduce__`` returning ``os.system``) the moment it is loaded.
Besides tensors and plain containers, the files of DeepSpeed 0.19 hold only a handful of
DeepSpeed's own classes; allowing exactly those lets every file load with the restricted
unpickler, and anything else is refused naming the file.

What reads files where (DeepSpeed 0.19.8) and what covers it:

* ``engine.load_checkpoint`` reads the model states (``SDLoader``) and every ZeRO partition
  (``_get_all_zero_checkpoint_state_dicts``) through ``engine.checkpoint_engine.load``:
  :func:`install` puts :func:`load` there. The optimizers' ``load_state_dict`` get the dicts
  already loaded and open nothing themselves.
* ``engine.load_checkpoint(..., load_optimizer_states=False)`` under ZeRO-3 calls
  ``zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint``, which calls ``torch.load
  (weights_only=False)`` itself; so do ``deepspeed.checkpoint.ds_to_universal`` and the
  universal-checkpoint loaders (``load_hp_checkpoint_state``, ``optimizer_state.pt``). None
  of those can be redirected: only directories that passed
  :func:`fulmen_deepspeed.manifest.verify_checkpoint_directory` (whose probe is this same
  restricted load) may reach them, and ``fulmen_deepspeed.convert`` reads the shards itself.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, List, Union

import torch

from fulmen.errors import FulmenCheckpointError

PathLike = Union[str, os.PathLike]

#: (module, name) of every non-torch class DeepSpeed 0.19 pickles into its checkpoint files:
#: the loss scalers (fp32/bf16: LossScaler, fp16: DynamicLossScaler), the stage enum in the
#: optimizer states, and the parameter-to-flat-buffer addresses of ZeRO 1/2.
ALLOWED = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)

_ZIP_MAGIC = b"PK\x03\x04"


@functools.lru_cache(maxsize=None)
def _allowed() -> tuple:
    return tuple(getattr(importlib.import_module(module), name) for module, name in ALLOWED)


def deepspeed_safe_globals() -> List[Any]:
    """The DeepSpeed classes a checkpoint file may rebuild; imports deepspeed on first call."""
    return list(_allowed())


def load(path: PathLike, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` allowing only :func:`deepspeed_safe_globals`.

    ``map_location`` is passed on as DeepSpeed passes it (a device or a function). ``mmap``
    maps a zip-format file instead of reading it: tensors are read when touched, which the
    converter uses to skip the optimizer moments. A file that would rebuild anything else,
    or is not a readable torch file, raises FulmenCheckpointError naming it."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise FulmenCheckpointError(
            f"DeepSpeed checkpoint file {str(path)!r} does not exist: the checkpoint is incomplete; "
            "use another one"
        ) from None
    except pickle.UnpicklingError as exc:
        if not is_zip(path):
            raise FulmenCheckpointError(
                f"cannot read DeepSpeed checkpoint file {str(path)!r}: it is not a torch file "
                f"({_first_line(exc)}); the checkpoint is damaged, use another one"
            ) from None
        raise FulmenCheckpointError(
            f"refusing to load {str(path)!r}: it would rebuild objects that are neither plain data nor "
            f"one of DeepSpeed's checkpoint classes ({_refused_detail(exc)}). A genuine DeepSpeed file "
            "never holds them, so it was replaced or tampered with; do not load it with "
            "weights_only=False, use a checkpoint you trust"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise FulmenCheckpointError(
            f"cannot read DeepSpeed checkpoint file {str(path)!r}: it is truncated or corrupted "
            f"({type(exc).__name__}: {_first_line(exc)}); use another checkpoint"
        ) from None


def probe(path: PathLike) -> None:
    """Refuse ``path`` unless it loads under :func:`load`'s rules, reading as little as possible:
    a zip-format file (DeepSpeed's default) is memory-mapped, so only its pickle and zip
    directory are read and the tensor bytes are left alone (they were just hashed). A legacy
    ``torch.save(_use_new_zipfile_serialization=False)`` file is loaded in full."""
    result = load(path, map_location="cpu", mmap=is_zip(path))
    del result


def is_zip(path: PathLike) -> bool:
    """Whether ``path`` starts like ``torch.save``'s zip format (the only format mmap reads)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _ZIP_MAGIC
    except OSError:
        return False


def install(engine: Any) -> Any:
    """Make ``engine``'s own reads safe: its ``checkpoint_engine`` becomes a
    ``TorchCheckpointEngine`` subclass whose ``load`` is :func:`load`; everything else (saving,
    commits, decoupled writers) still goes to the engine it replaces. Idempotent; returns it."""
    current = engine.checkpoint_engine
    if current is None:  # an engine without checkpointing (ZeRO-3 evaluation) reads nothing
        return None
    safe_class = _safe_engine_class()
    if not isinstance(current, safe_class):
        engine.checkpoint_engine = safe_class(current)
    return engine.checkpoint_engine


@functools.lru_cache(maxsize=None)
def _safe_engine_class() -> type:
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        """Loads through fulmen's restricted unpickler, writes through the engine it wraps."""

        def __init__(self, inner: Any) -> None:
            # Not TorchCheckpointEngine.__init__: the wrapped engine already read the config.
            self.inner = inner
            self.name = f"Safe({getattr(inner, 'name', type(inner).__name__)})"
            self.zipfile_serialization = getattr(inner, "zipfile_serialization", True)

        def load(self, path: str, map_location: Any = None) -> Any:
            """Every file DeepSpeed's ``load_checkpoint`` opens through its engine comes here."""
            return load(path, map_location=map_location)

        def create(self, info):
            return self.inner.create(info)

        def save(self, state_dict, path: str):
            return self.inner.save(state_dict, path)

        def makedirs(self, path, exist_ok=False):
            return self.inner.makedirs(path, exist_ok=exist_ok)

        def commit(self, info):
            return self.inner.commit(info)

        def is_data_parallel_writer(self, dp_rank):
            return self.inner.is_data_parallel_writer(dp_rank)

        def is_decoupled(self):
            return self.inner.is_decoupled()

        def set_commit_info(self, info):
            return self.inner.set_commit_info(info)

        def get_commit_info(self):
            return self.inner.get_commit_info()

        def cleanup(self):
            return self.inner.cleanup()

        def preserves_storage_sharing(self):
            return self.inner.preserves_storage_sharing()

        def __getattr__(self, name: str) -> Any:  # a writer's own attributes
            if name == "inner":
                raise AttributeError(name)
            return getattr(self.inner, name)

    return SafeCheckpointEngine


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _refused_detail(exc: BaseException) -> str:
    """The line of torch's long weights_only message that names what it refused."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "Unsupported global" in line or "Unsupported operand" in line or "GLOBAL" in line:
            # Not torch's advice to allowlist it: that is what must not happen here.
            return line.replace("WeightsUnpickler error: ", "").split(" Please use")[0][:300]
    return _first_line(exc)
