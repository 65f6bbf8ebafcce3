"""Pretrained weights read slice by slice into whatever each process holds.

A model too big for one device is built on the meta device (``configure_model`` under a
sharding strategy, or ``fabric.init_module(empty_init=True)``); the strategy shards it and
gives storage to each rank's shard only. :func:`load_pretrained` then fills those shards
from a ``safetensors`` checkpoint (one ``model.safetensors``, or the shards listed in
``model.safetensors.index.json`` that ``save_pretrained`` writes), reading from each file
only the rows this rank owns. No process reads, or allocates, the whole model.

What a parameter holds locally is recognised by what it is, with no import of the engine:

- a ``DTensor`` (FSDP2): the slice given by its placements on the device mesh;
- a ZeRO-3 parameter (it carries ``ds_tensor``, its flat partition): that range of the
  flattened tensor;
- an ordinary tensor: all of it.

Inside the Trainer, a model still on the meta device when :func:`load_pretrained` is called
(in ``configure_model``) is loaded once the strategy has set it up, before a checkpoint
is restored (so resuming wins over the pretrained weights).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError, FulmenConfigError

INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "model.safetensors"
PENDING = "_fulmen_pretrained"  # attribute on a module whose weights load after setup


@dataclass
class LoadReport:
    """What one process read: tensors filled, and the bytes read from the files (the
    figure that shows a rank read its share and not the model)."""

    tensors: int = 0
    bytes_read: int = 0
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


def _safe_open():
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading pretrained weights needs safetensors: pip install safetensors") from exc
    return safe_open


def weight_files(source: Union[str, os.PathLike]) -> Dict[str, Path]:
    """Tensor name → the ``.safetensors`` file holding it, for a file or a
    ``save_pretrained`` directory (sharded or not)."""
    source = Path(source)
    if source.is_file():
        files = [source]
    elif (source / INDEX_NAME).is_file():
        index = json.loads((source / INDEX_NAME).read_text())
        return {name: source / file for name, file in index["weight_map"].items()}
    elif (source / WEIGHTS_NAME).is_file():
        files = [source / WEIGHTS_NAME]
    else:
        found = sorted(p.name for p in source.iterdir()) if source.is_dir() else []
        raise FulmenCheckpointError(
            f"{source} holds no safetensors weights (expected {WEIGHTS_NAME} or {INDEX_NAME}"
            f"{'; found ' + ', '.join(found[:10]) if found else ''}); save the model with "
            "save_pretrained(path) (safe_serialization is the default) or pass the .safetensors file"
        )
    safe_open = _safe_open()
    out: Dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                out[name] = file
    return out


def _dtensor_box(tensor) -> Optional[Tuple[Tuple[int, int], ...]]:
    """(start, length) per dimension of this rank's slice of a DTensor, from its placements
    (torch.chunk semantics, which FSDP2 and DTensor use), or None for other tensors."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(tensor, DTensor):
        return None
    box = [[0, size] for size in tensor.shape]
    coordinate = tensor.device_mesh.get_coordinate()
    if coordinate is None:  # this rank is not in the mesh: it holds nothing
        return tuple((0, 0) for _ in tensor.shape)
    for mesh_dim, placement in enumerate(tensor.placements):
        if isinstance(placement, Shard):
            dim = placement.dim
            parts = tensor.device_mesh.size(mesh_dim)
            start, length = box[dim]
            chunk = -(-length // parts)
            offset = min(coordinate[mesh_dim] * chunk, length)
            box[dim] = [start + offset, max(0, min(chunk, length - offset))]
        elif not placement.is_replicate():
            raise FulmenConfigError(f"cannot load into a DTensor placed as {placement} (only Shard and Replicate)")
    return tuple((s, n) for s, n in box)


def _read_box(handle, name: str, box: Sequence[Tuple[int, int]]) -> torch.Tensor:
    view = handle.get_slice(name)
    if not box:  # a scalar
        return handle.get_tensor(name)
    return view[tuple(slice(s, s + n) for s, n in box)]


def _read_flat_range(handle, name: str, shape: Sequence[int], start: int, stop: int) -> torch.Tensor:
    """Elements ``start:stop`` of the flattened tensor, reading only the rows they span."""
    if len(shape) <= 1:
        return _read_box(handle, name, [(start, stop - start)] if shape else []).reshape(-1)
    row = 1
    for size in shape[1:]:
        row *= size
    first, last = start // row, -(-stop // row)
    rows = handle.get_slice(name)[first:last].reshape(-1)
    return rows[start - first * row: stop - first * row]


@torch.no_grad()
def _fill(target: torch.Tensor, handle, name: str, report: LoadReport) -> None:
    shape = tuple(handle.get_slice(name).get_shape())
    if hasattr(target, "ds_tensor"):  # a ZeRO-3 partitioned parameter
        full_shape = tuple(getattr(target, "ds_shape", shape))
        _check_shape(name, shape, full_shape)
        local = target.ds_tensor
        numel = 1
        for size in shape:
            numel *= size
        import torch.distributed as dist

        group = getattr(target, "ds_process_group", None)
        rank = dist.get_rank(group) if dist.is_initialized() else 0
        start = min(rank * local.numel(), numel)
        stop = min(start + local.numel(), numel)
        values = _read_flat_range(handle, name, shape, start, stop)
        local.view(-1)[: stop - start].copy_(values)
        report.bytes_read += values.numel() * values.element_size()
        report.tensors += 1
        return
    _check_shape(name, shape, tuple(target.shape))
    box = _dtensor_box(target)
    if box is not None:
        local = target.to_local()
        values = _read_box(handle, name, box)
    else:
        local = target
        values = handle.get_tensor(name)
    local.copy_(values.reshape(local.shape))
    report.bytes_read += values.numel() * values.element_size()
    report.tensors += 1


def _check_shape(name: str, saved: Tuple[int, ...], live: Tuple[int, ...]) -> None:
    if tuple(saved) != tuple(live):
        raise FulmenCheckpointError(
            f"pretrained tensor {name!r} has shape {list(saved)} but the model's has {list(live)}; "
            "build the model from the same config as the saved weights"
        )


def meta_non_persistent_buffers(module: nn.Module) -> List[str]:
    """Names of ``module``'s own non-persistent buffers still on the meta device: no
    checkpoint holds them (Llama's ``rotary_emb.inv_freq``), so once ``to_empty`` gives
    them storage only :func:`fill_non_persistent_buffers` can give them values."""
    skip = module._non_persistent_buffers_set
    return [n for n, b in module._buffers.items() if b is not None and b.is_meta and n in skip]


@torch.no_grad()
def fill_non_persistent_buffers(module: nn.Module, names: Sequence[str], device: torch.device, where: str = "") -> None:
    """Real values for the non-persistent buffers ``names`` of ``module`` (materialised from
    the meta device, so holding uninitialised memory), which no weights file can supply.

    Their values are computed by the module's constructor, so a module built from a config
    (every ``transformers`` module keeps it as ``.config``) is built again from it on the CPU,
    and its buffers are copied over; the dtype stays the one the model converted them to.
    Any other module gets a clear error: garbage here would silently change every output."""
    if not names:
        return
    fresh = _rebuilt_from_config(module)
    label = f"{where or type(module).__name__} ({type(module).__name__})"
    for name in names:
        value = None if fresh is None else fresh._buffers.get(name)
        current = module._buffers[name]
        if value is None or value.is_meta or tuple(value.shape) != tuple(current.shape):
            raise FulmenConfigError(
                f"the non-persistent buffer {name!r} of {label} was created on the meta device; no weights "
                "file holds it and fulmen cannot recompute it (the module has no .config to rebuild it from), "
                "so it would hold uninitialised memory. Create that module outside the meta device (for "
                "example in __init__ instead of configure_model), register the buffer with persistent=True "
                "so that the checkpoint holds it, or give the module a reset_parameters() that fills it"
            )
        module._buffers[name] = value.to(device=device, dtype=current.dtype)
    for attr, value in list(vars(module).items()):  # plain tensor attributes copied from a buffer
        if isinstance(value, torch.Tensor) and value.is_meta and isinstance(getattr(fresh, attr, None), torch.Tensor):
            setattr(module, attr, getattr(fresh, attr).to(device=device, dtype=value.dtype))


def _rebuilt_from_config(module: nn.Module) -> Optional[nn.Module]:
    config = getattr(module, "config", None)
    if config is None:
        return None
    try:
        with torch.device("cpu"):  # over the meta device the model was built under
            return type(module)(config)
    except Exception:  # a constructor that takes more than the config: not rebuildable here
        return None


def _materialize_plain_meta(module: nn.Module, device: torch.device) -> None:
    """Storage for tensors still on the meta device of an unsharded module (a model built
    with ``init_module(empty_init=True)`` on a strategy that does not shard); the weights
    file fills the parameters and persistent buffers, the non-persistent ones are computed
    here (:func:`fill_non_persistent_buffers`)."""
    aliases = _tied_names(module)  # to_empty gives each alias its own storage: tie them again
    for name, sub in module.named_modules():
        if any(t.is_meta for t in list(sub._parameters.values()) + list(sub._buffers.values()) if t is not None):
            non_persistent = meta_non_persistent_buffers(sub)
            sub.to_empty(device=device, recurse=False)
            reset = getattr(sub, "reset_parameters", None)
            if non_persistent and callable(reset):
                reset()  # the module's own initialisation; the file then overwrites its weights
            else:
                fill_non_persistent_buffers(sub, non_persistent, device, name)
    for alias, name in aliases.items():
        owner, _, attr = alias.rpartition(".")
        setattr(module.get_submodule(owner), attr, module.get_parameter(name))


def _tied_names(module: nn.Module) -> Dict[str, str]:
    """Names that alias another parameter (``lm_head.weight`` tied to the embedding): a
    checkpoint may store either one."""
    seen: Dict[int, str] = {}
    aliases: Dict[str, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases[name] = seen[id(param)]
        else:
            seen[id(param)] = name
    return aliases


def is_on_meta(module: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` is still on the meta device (not yet
    sharded and materialised by a strategy)."""
    return any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers())


def load_pretrained(
    module: nn.Module,
    source: Union[str, os.PathLike],
    *,
    prefix: str = "",
    strict: bool = True,
    device: Optional[torch.device] = None,
) -> Optional[LoadReport]:
    """Fill ``module``'s parameters and persistent buffers from safetensors weights,
    each process reading only what it holds (see the module docstring).

    ``prefix`` is put in front of the checkpoint's names to match the module's (``"model."``
    when the weights of a bare model go into a wrapper holding it as ``self.model``).
    ``strict``: every tensor of the module must be in the files and every file tensor in
    the module. Returns a :class:`LoadReport`; returns ``None`` when ``module`` is still on
    the meta device and is owned by a fulmen ``Trainer`` run in progress: the weights are
    then read right after the strategy sets the module up. Outside the Trainer, call it
    after ``fabric.setup(model)``. Non-persistent buffers (no file holds them: Llama's
    rotary ``inv_freq``) of a meta-built model are computed again when it is materialised
    (:func:`fill_non_persistent_buffers`), or refused if they cannot be.
    """
    if is_on_meta(module) and not _sharded(module):
        if device is None:
            setattr(module, PENDING, (str(source), prefix, strict))  # Trainer: after setup
            return None
        _materialize_plain_meta(module, device)
    files = weight_files(source)
    by_file: Dict[Path, List[Tuple[str, str]]] = {}
    live = dict(module.named_parameters())
    live.update(_persistent_buffers(module))
    aliases = _tied_names(module)
    report = LoadReport()
    wanted = {}
    for saved in files:
        target = prefix + saved
        target = aliases.get(target, target)
        if target in live:
            wanted[target] = saved
        else:
            report.unexpected.append(saved)
    report.missing = sorted(n for n in live if n not in wanted and aliases.get(n, n) not in wanted)
    if strict and (report.missing or report.unexpected):
        raise FulmenCheckpointError(
            f"pretrained weights in {source} do not match {type(module).__name__}: missing from the files "
            f"{report.missing[:8]}, not in the model {report.unexpected[:8]}; check the config and "
            "prefix= (the module's names are the file's names with prefix in front), or pass strict=False"
        )
    for target, saved in wanted.items():
        by_file.setdefault(files[saved], []).append((target, saved))
    safe_open = _safe_open()
    for file, pairs in by_file.items():  # all shapes first: a bad file leaves the model untouched
        with safe_open(str(file), framework="pt") as handle:
            for target, saved in pairs:
                tensor = live[target]
                live_shape = tuple(getattr(tensor, "ds_shape", tensor.shape))  # ZeRO-3: the full shape
                _check_shape(saved, tuple(handle.get_slice(saved).get_shape()), live_shape)
    for file, pairs in by_file.items():
        with safe_open(str(file), framework="pt") as handle:
            for target, saved in pairs:
                _fill(live[target], handle, saved, report)
    module.pretrained_load_report = report  # what this rank read, for logs and tests
    return report


def _persistent_buffers(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The buffers a ``state_dict`` (and so ``save_pretrained``) would hold, without building
    one (which gathers shards under some engines)."""
    out = {}
    for prefix, sub in module.named_modules():
        skip = getattr(sub, "_non_persistent_buffers_set", set())
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in skip:
                out[f"{prefix}.{name}" if prefix else name] = buffer
    return out


def _sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_tensor") for p in module.parameters())


def load_pending(root: nn.Module) -> List[LoadReport]:
    """Load the weights :func:`load_pretrained` deferred on ``root``'s submodules (the
    Trainer calls this once the strategy has set the module up); each is loaded once."""
    reports = []
    for module in root.modules():
        pending = module.__dict__.pop(PENDING, None)
        if pending is None:
            continue
        source, prefix, strict = pending
        if is_on_meta(module) and not _sharded(module):
            raise FulmenConfigError(
                f"{type(module).__name__} is still on the meta device after setup, so the weights from {source} "
                "have nowhere to go; use a sharding strategy (FSDP, or ZeRO stage 3) or build the model "
                "outside the meta device"
            )
        reports.append(load_pretrained(module, source, prefix=prefix, strict=strict))
    return reports


def has_pending(root: Any) -> bool:
    """Whether some submodule of ``root`` waits for its pretrained weights."""
    return isinstance(root, nn.Module) and any(PENDING in m.__dict__ for m in root.modules())
