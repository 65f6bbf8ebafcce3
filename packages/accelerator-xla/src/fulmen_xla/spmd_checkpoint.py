"""Checkpoints of ``xla_spmd``: a directory that distributed checkpoint (DCP) fills shard by shard.

Under SPMD a parameter lives in pieces on every device; gathering it to write one file
would need the whole model in one place. So the sharded tensors go through DCP with
torch-xla's ``SPMDSavePlanner``, each device's shard written as it is; everything else of
the Trainer's checkpoint (loop position, RNG, callbacks, host tensors) goes into one file
through fulmen's checkpoint IO, with a marker where each sharded tensor was::

    epoch=1-step=8.ckpt/
        meta.ckpt               the checkpoint without its sharded tensors (checksummed)
        tensors/.metadata       DCP's index of tensors, shapes and chunks (a pickle)
        tensors/__0_0.distcp    the shards
        fulmen_manifest.json    size and SHA-256 of every other file, written last

The directory is written under a temporary name and renamed when complete. On load the
manifest is checked first (DCP unpickles ``.metadata``), then ``.metadata`` itself is read
by an unpickler that builds only DCP's own record types, so a forged file runs no code
even if its manifest was forged with it. Sharded tensors load straight into the live
(sharded) parameters with ``SPMDLoadPlanner``; the rest into host tensors of the recorded
shapes, which is also how a machine without torch-xla reads the checkpoint
(:func:`read_on_host`, behind ``Module.load_from_checkpoint``).
"""

from __future__ import annotations

import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from fulmen.errors import FulmenCheckpointError
from fulmen.io import manifest
from fulmen.io.atomic import publish_directory, remove_path
from fulmen.io.checkpoint_io import TorchCheckpointIO

PathLike = Union[str, os.PathLike]
MARKER = "__fulmen_xla_dcp__"
META_NAME = "meta.ckpt"
TENSORS_DIR = "tensors"
MANIFEST_FORMAT = "fulmen.xla.spmd.manifest"
_KIND, _PACKAGE = "XLA SPMD", "fulmen-accelerator-xla"


# ---------------------------------------------------------------------- the split
def split(checkpoint: Any, prefix: str = "") -> Tuple[Any, Dict[str, torch.Tensor]]:
    """``checkpoint`` with every XLA tensor replaced by ``{MARKER: key}``, and those tensors
    by key (``state_dict/layer.weight``, ``optimizer_states/0/state/0/exp_avg``)."""
    tensors: Dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor) and obj.device.type == "xla":
            tensors[key] = obj
            return {MARKER: key}
        if isinstance(obj, dict):
            return {k: walk(v, f"{key}/{k}" if key else str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            items = [walk(v, f"{key}/{i}" if key else str(i)) for i, v in enumerate(obj)]
            return type(obj)(items) if isinstance(obj, list) else tuple(items)
        return obj

    return walk(checkpoint, prefix), tensors


def join(meta: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`split`."""
    if isinstance(meta, dict):
        if set(meta) == {MARKER}:
            return tensors[meta[MARKER]]
        return {k: join(v, tensors) for k, v in meta.items()}
    if isinstance(meta, list):
        return [join(v, tensors) for v in meta]
    if isinstance(meta, tuple):
        return tuple(join(v, tensors) for v in meta)
    return meta


# ---------------------------------------------------------------------- saving
def save(checkpoint: Dict[str, Any], path: PathLike, checkpoint_io: Optional[Any] = None) -> None:
    """Write ``checkpoint`` as a directory at ``path`` (replacing one that is there, only once
    the new one is complete)."""
    import torch.distributed.checkpoint as dcp
    from torch_xla.experimental.distributed_checkpoint import SPMDSavePlanner

    from fulmen_xla import runtime

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    meta, tensors = split(checkpoint)
    runtime.sync()
    try:
        tmp.mkdir()
        dcp.save(tensors, storage_writer=dcp.FileSystemWriter(str(tmp / TENSORS_DIR)), planner=SPMDSavePlanner(),
                 no_dist=True)
        (checkpoint_io or TorchCheckpointIO()).save_checkpoint(meta, tmp / META_NAME)
        manifest.write_manifest(tmp, MANIFEST_FORMAT)
        publish_directory(tmp, target)
    except BaseException:
        remove_path(tmp)
        raise


def is_spmd_checkpoint(path: PathLike) -> bool:
    """Whether ``path`` is a directory this module wrote, by its manifest's format (a
    damaged manifest counts as another backend's: its owner reports it)."""
    return Path(path).is_dir() and manifest.manifest_format(path) == MANIFEST_FORMAT


# ---------------------------------------------------------------------- loading
# What DCP's ``.metadata`` pickle is made of (torch 2.9-2.13): its own record types, and
# the few torch and pathlib values they hold. Each of these only stores data when built.
_ALLOWED = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # rebuilds torch.strided from its name
    ("torch", "Size"), ("torch", "device"),
    ("torch", "contiguous_format"), ("torch", "channels_last"), ("torch", "preserve_format"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}
_DCP_RECORDS = "torch.distributed.checkpoint.metadata"


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's record types, torch sizes and dtypes, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module == _DCP_RECORDS
            or (module, name) in _ALLOWED
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        )
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def _reader(directory: Path):
    import torch.distributed.checkpoint as dcp

    class SafeReader(dcp.FileSystemReader):
        """DCP's reader with its one ``pickle.load`` replaced by the restricted unpickler."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata = read_metadata(directory)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(directory / TENSORS_DIR))


def read_metadata(directory: Path):
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    path = directory / TENSORS_DIR / ".metadata"
    try:
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, OSError) as exc:
        raise FulmenCheckpointError(
            f"{str(path)!r} is not the tensor index fulmen writes (its pickle asks for {exc}); nothing "
            "from it was run or loaded. Use another checkpoint (an earlier one, or a fresh copy)"
        ) from None
    for key, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, BytesStorageMetadata):
            raise FulmenCheckpointError(
                f"{str(path)!r} lists {key!r} as pickled bytes, which fulmen never writes there and would have "
                "to unpickle; the checkpoint is refused. Use another checkpoint"
            )
    return metadata


def verify(path: PathLike) -> None:
    manifest.verify_directory(path, MANIFEST_FORMAT, _KIND, _PACKAGE)


def load(path: PathLike, checkpoint_io: Optional[Any] = None, live: Optional[Dict[str, torch.Tensor]] = None,
         ) -> Dict[str, Any]:
    """Read a checkpoint directory. Keys of ``live`` (sharded XLA tensors of the model being
    resumed, by the keys :func:`split` gives) load in place, shard by shard, with
    ``SPMDLoadPlanner``; every other tensor comes back on the host in its recorded shape."""
    import torch.distributed.checkpoint as dcp

    directory = Path(path)
    verify(directory)
    meta = (checkpoint_io or TorchCheckpointIO()).load_checkpoint(directory / META_NAME)
    metadata = read_metadata(directory)
    live = live or {}
    targets: Dict[str, torch.Tensor] = {}
    for key, entry in metadata.state_dict_metadata.items():
        current = live.get(key)
        if current is not None and tuple(current.shape) == tuple(entry.size) and current.dtype == entry.properties.dtype:
            targets[key] = current
        else:
            targets[key] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
    if any(t.device.type == "xla" for t in targets.values()):
        from torch_xla.experimental.distributed_checkpoint import SPMDLoadPlanner

        planner = SPMDLoadPlanner()
    else:
        planner = dcp.DefaultLoadPlanner()
    dcp.load(targets, storage_reader=_reader(directory), planner=planner, no_dist=True)
    return join(meta, targets)


def read_on_host(path: PathLike) -> Optional[Dict[str, Any]]:
    """The checkpoint with every tensor on the CPU (no torch-xla needed), or None when
    ``path`` is not an XLA SPMD checkpoint directory."""
    if not is_spmd_checkpoint(path):
        return None
    return load(path)
