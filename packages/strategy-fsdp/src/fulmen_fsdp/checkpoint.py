"""Sharded checkpoints: one directory per checkpoint, reshardable, convertible to one file.

Layout of a sharded checkpoint ``<path>/`` (for example ``checkpoints/last.ckpt/``)::

    .metadata, __<rank>_<i>.distcp   torch.distributed.checkpoint (DCP): every sharded tensor
                                     (DTensor) of the checkpoint; each rank writes its shards
    fulmen_checkpoint.pt             everything else (loop progress, plain tensors, optimizer
                                     hyperparameters, callback state...), with a marker where
                                     each sharded tensor was; written by rank 0 with fulmen's
                                     TorchCheckpointIO (checksummed, loaded with weights_only)

The directory is written under a hidden temporary name next to its final place and renamed
into place only when complete, so a kill during a save leaves the previous checkpoint of
that name intact, never a half-written one.

DCP stores each tensor with its global shape and the offsets of every shard, which is what
makes resharding work: loading reads, for each tensor of the *live* (sharded) model, exactly
the slices this rank now owns, whatever the number of processes that wrote them.

Non-tensor entries (optimizer ``param_groups``, loop state) never go through DCP: they live
in the metadata file, which every rank reads in full.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from fulmen.errors import FulmenCheckpointError
from fulmen.io.atomic import publish_directory, remove_path  # noqa: F401 - re-exported

PathLike = Union[str, os.PathLike]

META_NAME = "fulmen_checkpoint.pt"
FORMAT_NAME = "fulmen.sharded"
FORMAT_VERSION = 1
HEADER_KEY = "_fulmen_sharded"  # in the metadata file: format, version, world size
MARKER = "__fulmen_sharded_tensor__"  # a sharded tensor's place in the metadata file
_DROP = object()


# ----------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ShardedTensorRef:
    """A sharded tensor of a checkpoint that has not been read yet.

    ``load_checkpoint`` of a sharded directory returns these in place of the tensors; the
    strategy reads them straight into the live (sharded) module and optimizer, resharding on
    the way. ``full_tensor()`` reads the whole tensor on this process (no process group).
    """

    directory: str
    key: str
    shape: Tuple[int, ...]
    dtype: torch.dtype

    def full_tensor(self) -> torch.Tensor:
        """Read the whole tensor on this process from the checkpoint directory, without a process
        group (for inspection or consolidation into one file)."""
        out = {self.key: torch.empty(self.shape, dtype=self.dtype)}
        dcp_load(out, self.directory, no_dist=True)
        return out[self.key]

    def __repr__(self) -> str:
        return f"ShardedTensorRef({self.key!r}, shape={list(self.shape)}, dtype={self.dtype})"


def _is_dtensor(value: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(value, DTensor)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise FulmenCheckpointError(f"unknown tensor dtype {name!r} in a sharded checkpoint")
    return dtype


def iter_refs(obj: Any) -> Iterator[ShardedTensorRef]:
    """Every :class:`ShardedTensorRef` inside a nested checkpoint structure, depth first."""
    if isinstance(obj, ShardedTensorRef):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from iter_refs(value)


def has_refs(obj: Any) -> bool:
    """Whether a checkpoint structure still holds tensors to be read from a sharded directory."""
    return next(iter_refs(obj), None) is not None


def _rebuild(obj: Any, items) -> Any:
    """A container of the same kind as ``obj`` from ``items`` (pairs for mappings)."""
    if isinstance(obj, Mapping):
        try:
            return type(obj)(items)
        except TypeError:
            return dict(items)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*items)
    return type(obj)(items)


# ----------------------------------------------------------------------------- saving
def split_sharded(checkpoint: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(metadata, tensors)``: the checkpoint with a marker in place of every DTensor, and
    the DTensors by a unique key (their path in the checkpoint, joined with ``/``)."""
    tensors: Dict[str, Any] = {}

    def walk(obj: Any, path: Tuple[str, ...]) -> Any:
        if _is_dtensor(obj):
            key = "/".join(path) or "tensor"
            base, n = key, 1
            while key in tensors:
                key, n = f"{base}#{n}", n + 1
            tensors[key] = obj
            return {MARKER: key, "shape": list(obj.shape), "dtype": _dtype_name(obj.dtype)}
        if isinstance(obj, Mapping):
            return _rebuild(obj, [(k, walk(v, path + (str(k),))) for k, v in obj.items()])
        if isinstance(obj, (list, tuple)):
            return _rebuild(obj, [walk(v, path + (str(i),)) for i, v in enumerate(obj)])
        return obj

    return walk(checkpoint, ()), tensors


def _markers_to_refs(obj: Any, directory: str) -> Any:
    if isinstance(obj, Mapping):
        if MARKER in obj and set(obj) == {MARKER, "shape", "dtype"}:
            return ShardedTensorRef(directory, str(obj[MARKER]), tuple(int(s) for s in obj["shape"]), _dtype_from_name(obj["dtype"]))
        return _rebuild(obj, [(k, _markers_to_refs(v, directory)) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)):
        return _rebuild(obj, [_markers_to_refs(v, directory) for v in obj])
    return obj


def temporary_directory(path: PathLike) -> Path:
    """Where a sharded checkpoint for ``path`` is written before it is renamed into place.
    Its name is fixed (every rank must agree on it without talking) and does not end in
    ``.ckpt``, so a search for checkpoints never takes it for one."""
    path = Path(path)
    return path.with_name(f".{path.name}.sharded-tmp")


def write_metadata(metadata: Dict[str, Any], directory: PathLike, world_size: int) -> None:
    """Write the checkpoint's non-tensor part and its format header (format, version, world
    size) as ``fulmen_checkpoint.pt`` in ``directory``, through fulmen's atomic, checksummed IO."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "world_size": int(world_size)}
    TorchCheckpointIO().save_checkpoint({**metadata, HEADER_KEY: header}, Path(directory) / META_NAME)


# One implementation for every directory checkpoint, kept under the names this module exported.
publish = publish_directory


# ----------------------------------------------------------------------------- loading
def is_sharded_checkpoint(path: PathLike) -> bool:
    """Whether ``path`` is a complete sharded checkpoint directory written by fulmen."""
    path = Path(path)
    return path.is_dir() and (path / META_NAME).is_file()


def read_metadata(path: PathLike, checkpoint_io: Any = None) -> Dict[str, Any]:
    """The checkpoint of directory ``path`` with a ``ShardedTensorRef`` for each sharded
    tensor. Raises ``FulmenCheckpointError`` for an incomplete or damaged directory."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_dir():
        raise FulmenCheckpointError(f"{str(path)!r} is a file, not a sharded checkpoint directory")
    meta_file = path / META_NAME
    if not meta_file.is_file():
        raise FulmenCheckpointError(
            f"{str(path)!r} is not a complete sharded checkpoint: it has no {META_NAME} (the save "
            "that wrote it did not finish, or it was not written by fulmen-strategy-fsdp)"
        )
    reader = checkpoint_io if checkpoint_io is not None else TorchCheckpointIO()
    checkpoint = reader.load_checkpoint(meta_file)
    header = checkpoint.pop(HEADER_KEY, None)
    if not isinstance(header, Mapping) or header.get("format") != FORMAT_NAME:
        raise FulmenCheckpointError(f"{str(meta_file)!r} is not the metadata of a fulmen sharded checkpoint")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise FulmenCheckpointError(
            f"{str(path)!r} uses sharded checkpoint format {header['format_version']}, newer than this "
            f"fulmen-strategy-fsdp understands ({FORMAT_VERSION}); upgrade fulmen-strategy-fsdp"
        )
    checkpoint = _markers_to_refs(checkpoint, str(path))
    if has_refs(checkpoint) and not (path / ".metadata").is_file():
        raise FulmenCheckpointError(f"{str(path)!r} is missing its DCP .metadata file; the checkpoint is damaged")
    return checkpoint


def saved_world_size(path: PathLike) -> Optional[int]:
    """How many processes wrote the sharded checkpoint ``path``."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    checkpoint = TorchCheckpointIO().load_checkpoint(Path(path) / META_NAME)
    header = checkpoint.get(HEADER_KEY) or {}
    return header.get("world_size")


def dcp_load(tensors: Dict[str, torch.Tensor], directory: PathLike, no_dist: bool = False) -> None:
    """Read ``tensors`` (key → destination, DTensor or plain) in place from a DCP directory."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    if not tensors:
        return
    try:
        with warnings.catch_warnings():
            # no_dist: DCP warns that it assumes a single process, which is what was asked.
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(tensors, checkpoint_id=str(directory), no_dist=no_dist)
    except CheckpointException as exc:  # a BaseException, not an Exception
        raise FulmenCheckpointError(f"cannot read the sharded tensors of {str(directory)!r}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "Error" in line or "Missing" in line or "mismatch" in line.lower()]
    return (useful[-1] if useful else (lines[-1] if lines else type(exc).__name__))[:500]


def bind_refs(saved: Any, target: Any, strict: bool, what: str) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """Pair each ``ShardedTensorRef`` of ``saved`` with the tensor at the same place in
    ``target`` (the live state dict). Returns ``saved`` with those tensors in place of the
    references, and the key → tensor map to read them into. A reference without a live
    counterpart is an error when ``strict``, otherwise it is left out."""
    loads: Dict[str, torch.Tensor] = {}
    missing: List[str] = []

    def walk(obj: Any, live: Any, path: Tuple[Any, ...]) -> Any:
        if isinstance(obj, ShardedTensorRef):
            if not isinstance(live, torch.Tensor):
                missing.append(".".join(map(str, path)))
                return _DROP
            if tuple(live.shape) != obj.shape:
                raise FulmenCheckpointError(
                    f"{what}: {'.'.join(map(str, path))} has shape {list(obj.shape)} in the checkpoint but "
                    f"{list(live.shape)} in the model; load it into the same architecture"
                )
            loads[obj.key] = live
            return live
        if isinstance(obj, Mapping):
            live_map = live if isinstance(live, Mapping) else {}
            items = [(k, walk(v, live_map.get(k, _DROP), path + (k,))) for k, v in obj.items()]
            return _rebuild(obj, [(k, v) for k, v in items if v is not _DROP])
        if isinstance(obj, (list, tuple)):
            live_seq = live if isinstance(live, (list, tuple)) else ()
            values = [walk(v, live_seq[i] if i < len(live_seq) else _DROP, path + (i,)) for i, v in enumerate(obj)]
            return _rebuild(obj, [v for v in values if v is not _DROP])
        return obj

    resolved = walk(saved, target, ())
    if missing and strict:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise FulmenCheckpointError(
            f"{what}: the checkpoint has sharded tensors with no counterpart in the model: {shown}. Load it "
            "into the same architecture, or pass strict=False to skip them"
        )
    return resolved, loads


# ----------------------------------------------------------------------------- optimizer formats
def is_fqn_keyed(osd: Any) -> bool:
    """An optimizer state dict keyed by parameter names (torch.distributed.checkpoint's
    format) rather than by position (``torch.optim.Optimizer.state_dict``'s)."""
    if not isinstance(osd, Mapping) or "param_groups" not in osd or "state" not in osd:
        return False
    groups = osd["param_groups"]
    return isinstance(groups, (list, tuple)) and any(
        isinstance(p, str) for g in groups if isinstance(g, Mapping) for p in g.get("params", ())
    )


def fqn_to_ids(osd: Mapping[str, Any]) -> Dict[str, Any]:
    """Name-keyed optimizer state → ``torch.optim.Optimizer.state_dict`` format (positions)."""
    ids: Dict[str, int] = {}
    groups = []
    for group in osd["param_groups"]:
        numbered = []
        for fqn in group["params"]:
            ids.setdefault(fqn, len(ids))
            numbered.append(ids[fqn])
        groups.append({**group, "params": numbered})
    state = {ids[fqn]: value for fqn, value in osd["state"].items() if fqn in ids}
    return {"state": state, "param_groups": groups}


def ids_to_fqn(osd: Mapping[str, Any], names: List[str]) -> Dict[str, Any]:
    """Position-keyed optimizer state → name-keyed, given the names of this optimizer's
    parameters in its order (the order that gave the positions, as in torch's own loading)."""
    saved = [i for group in osd["param_groups"] for i in group["params"]]
    if len(saved) != len(names):
        raise FulmenCheckpointError(
            f"the checkpoint's optimizer state covers {len(saved)} parameters but this optimizer has "
            f"{len(names)}; resume with the same model and optimizer setup"
        )
    to_name = dict(zip(saved, names))
    groups = [{**group, "params": [to_name[i] for i in group["params"]]} for group in osd["param_groups"]]
    state = {to_name[int(i)]: value for i, value in osd["state"].items()}
    return {"state": state, "param_groups": groups}


def _positional_optimizer_states(obj: Any) -> Any:
    if is_fqn_keyed(obj):
        return fqn_to_ids(obj)
    if isinstance(obj, Mapping):
        return _rebuild(obj, [(k, _positional_optimizer_states(v)) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)):
        return _rebuild(obj, [_positional_optimizer_states(v) for v in obj])
    return obj


# ----------------------------------------------------------------------------- consolidation
def load_sharded_checkpoint(path: PathLike, optimizer_format: str = "positional") -> Dict[str, Any]:
    """Read a whole sharded checkpoint into memory on this process (no process group).

    Every sharded tensor becomes a full tensor. With ``optimizer_format="positional"`` (the
    default) optimizer states are converted to ``torch.optim.Optimizer.state_dict``'s
    format, so ``optimizer.load_state_dict`` (and any fulmen strategy) accepts them;
    ``"names"`` keeps them keyed by parameter name."""
    if optimizer_format not in ("positional", "names"):
        raise ValueError(f"optimizer_format={optimizer_format!r}; use 'positional' or 'names'")
    checkpoint = read_metadata(path)
    refs = {ref.key: ref for ref in iter_refs(checkpoint)}
    tensors = {key: torch.empty(ref.shape, dtype=ref.dtype) for key, ref in refs.items()}
    dcp_load(tensors, path, no_dist=True)

    def fill(obj: Any) -> Any:
        if isinstance(obj, ShardedTensorRef):
            return tensors[obj.key]
        if isinstance(obj, Mapping):
            return _rebuild(obj, [(k, fill(v)) for k, v in obj.items()])
        if isinstance(obj, (list, tuple)):
            return _rebuild(obj, [fill(v) for v in obj])
        return obj

    checkpoint = fill(checkpoint)
    if optimizer_format == "positional":
        checkpoint = _positional_optimizer_states(checkpoint)
    return checkpoint


def consolidate_checkpoint(path: PathLike, output: PathLike) -> Path:
    """Convert the sharded checkpoint directory ``path`` into the single file ``output``.

    The file has the same layout as a ``state_dict_type="full"`` checkpoint and as one
    written without sharding: ``torch.load(output, weights_only=True)["state_dict"]`` is a
    plain state dict, ``Module.load_from_checkpoint(output)`` works, and any strategy
    (single device, DDP, FSDP at any world size) can resume training from it.
    """
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    path, output = Path(path), Path(output)
    if not is_sharded_checkpoint(path):
        if path.is_file():
            raise FulmenCheckpointError(f"{str(path)!r} is already a single-file checkpoint; nothing to consolidate")
        read_metadata(path)  # raises with the precise reason
    if output.resolve() == path.resolve():
        raise FulmenCheckpointError("the consolidated file must not replace the sharded directory it is read from")
    TorchCheckpointIO().save_checkpoint(load_sharded_checkpoint(path), output)
    return output
