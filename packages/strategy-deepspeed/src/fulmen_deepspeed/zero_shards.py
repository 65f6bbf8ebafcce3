"""Full fp32 weights from the per-rank files of a ZeRO 1/2/3 checkpoint, on one CPU process.

Why not ``deepspeed.utils.zero_to_fp32``: it unpickles every file with
``weights_only=False`` and cannot be told otherwise, so the files are read here through
:func:`fulmen_deepspeed.safe_load.load` and put together following the same layout (that of
DeepSpeed 0.19's ZeRO optimizers):

* The fp32 master weights live in the optimizer files. ZeRO 1/2: per parameter group, each
  rank holds one contiguous slice of the group's flat buffer; the ranks' slices in order are
  the buffer, in which the parameters follow each other (plus ``param_alignment_paddings``).
  ZeRO-3: every parameter is split itself, ``ceil(numel / world_size)`` elements per rank,
  the last padded; each rank's flat groups hold its slices of all parameters in order.
* Buffers, the shapes, frozen parameters (ZeRO-3: split like the others) and tied names
  live in the model-states files.
* ZeRO-3's model-states ``module`` holds empty placeholders for the partitioned parameters;
  returning those is the bug of Lightning #18648, so every result is checked against its
  recorded shape and refused when empty.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, Sequence

import torch

from fulmen.errors import FulmenCheckpointError

_OPTIM = "optimizer_state_dict"


def _numel(name: str, shape: Sequence[int], where: str) -> int:
    """The element count of a recorded parameter shape; an empty one is refused (a parameter
    recorded while partitioned, as ZeRO-3 placeholders are: the bug of Lightning #18648)."""
    numel = int(math.prod(int(size) for size in shape))
    if numel == 0:
        raise FulmenCheckpointError(
            f"{where}: parameter {name!r} was saved with the empty shape {tuple(shape)}: it was recorded while "
            "ZeRO-3 had it partitioned (the bug of Lightning #18648), so its values are not in the checkpoint; "
            "use another checkpoint"
        )
    return numel


def _take(chunks: Sequence[torch.Tensor], start: int, length: int, where: str) -> torch.Tensor:
    """``length`` elements from ``start`` of the concatenation of ``chunks``, without building it."""
    pieces, offset = [], 0
    for chunk in chunks:
        size = chunk.numel()
        lo, hi = max(start, offset), min(start + length, offset + size)
        if lo < hi:
            pieces.append(chunk.reshape(-1)[lo - offset : hi - offset])
        offset += size
    got = sum(piece.numel() for piece in pieces)
    if got != length:
        raise FulmenCheckpointError(
            f"{where}: the saved partitions hold {got} of the {length} elements a parameter needs "
            "(the files do not belong together); use another checkpoint"
        )
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _finish(tensor: torch.Tensor) -> torch.Tensor:
    """An own, compact fp32 copy: a view would keep (and ``torch.save`` would write) the whole
    flat buffer, or the memory-mapped file, behind it."""
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return tensor.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)


def _zero12_trainable(shapes: List[Dict[str, Any]], optim: List[Dict[str, Any]], where: str) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    world = len(optim)
    paddings = optim[0].get("param_alignment_paddings")
    for group, group_shapes in enumerate(shapes):
        chunks = [state["single_partition_of_fp32_groups"][group] for state in optim]
        pads = paddings[group] if paddings is not None else [0] * len(group_shapes)
        if len(pads) != len(group_shapes):
            raise FulmenCheckpointError(
                f"{where}: parameter group {group} has {len(group_shapes)} parameters but {len(pads)} alignment "
                "paddings; the files do not belong together, use another checkpoint"
            )
        offset = 0
        for (name, shape), pad in zip(group_shapes.items(), pads):
            numel = _numel(name, shape, where)
            out[name] = _take(chunks, offset, numel, f"{where}, {name}").view(tuple(shape))
            offset += numel + int(pad)
        available = sum(chunk.numel() for chunk in chunks)
        align = 2 * world  # ZeRO 1/2 pad each group's buffer to a multiple of it
        if math.ceil(offset / align) != math.ceil(available / align):
            raise FulmenCheckpointError(
                f"{where}: parameter group {group} records {offset} elements but its partitions hold "
                f"{available}; the files do not belong together, use another checkpoint"
            )
    return out


def _zero3_trainable(shapes: List[Dict[str, Any]], optim: List[Dict[str, Any]], where: str) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    world = len(optim)
    groups = [state["fp32_flat_groups"] for state in optim]
    offset = 0
    for group_shapes in shapes:
        for name, shape in group_shapes.items():
            numel = _numel(name, shape, where)
            part = math.ceil(numel / world)
            pieces = [_take(groups[rank], offset, part, f"{where}, {name} (rank {rank})") for rank in range(world)]
            out[name] = torch.cat(pieces)[:numel].view(tuple(shape))
            offset += part
    available = sum(flat.numel() for flat in groups[0])
    if offset != available:
        raise FulmenCheckpointError(
            f"{where}: the parameters' shapes account for {offset} elements per rank but the partitions "
            f"hold {available}; the files do not belong together, use another checkpoint"
        )
    return out


def _frozen(models: List[Dict[str, Any]], stage: int, where: str) -> Dict[str, torch.Tensor]:
    shapes = models[0].get("frozen_param_shapes") or {}
    out = {}
    for name, shape in shapes.items():
        if stage <= 2:  # whole, in the one model-states file
            _numel(name, shape, where)
            out[name] = models[0]["frozen_param_fragments"][name].view(tuple(shape))
        else:  # one slice per rank, like trainable ones
            pieces = [model["frozen_param_fragments"][name].reshape(-1) for model in models]
            out[name] = torch.cat(pieces)[: _numel(name, shape, where)].view(tuple(shape))
    return out


def full_state_dict(models: List[Dict[str, Any]], optims: List[Dict[str, Any]], where: str) -> "OrderedDict[str, torch.Tensor]":
    """The full state dict (DeepSpeed's parameter names) from the loaded model-states files
    (one for ZeRO 1/2, one per rank for ZeRO-3) and the optimizer files (one per rank, in
    rank order). ``where`` names the checkpoint in errors."""
    states = [optim[_OPTIM] for optim in optims]
    stage = int(states[0]["zero_stage"])
    count = states[0]["partition_count"]
    count = max(count) if isinstance(count, (list, tuple)) else int(count)
    if count != len(states):
        raise FulmenCheckpointError(
            f"{where}: the optimizer state is split across {count} processes but {len(states)} optimizer "
            "files are there; the checkpoint is incomplete, use another one"
        )
    first = models[0]
    shapes = first["param_shapes"]
    if stage <= 2:
        trainable = _zero12_trainable(shapes, states, where)
    elif stage == 3:
        trainable = _zero3_trainable(shapes, states, where)
    else:
        raise FulmenCheckpointError(f"{where}: ZeRO stage {stage} is not one fulmen can read")
    expected = {name: tuple(shape) for group in shapes for name, shape in group.items()}
    expected.update({name: tuple(shape) for name, shape in (first.get("frozen_param_shapes") or {}).items()})
    params = {**_frozen(models, stage, where), **trainable}
    for name, tensor in params.items():
        if tensor.numel() == 0 or tuple(tensor.shape) != expected[name]:  # cannot happen, must not
            raise FulmenCheckpointError(
                f"{where}: parameter {name!r} came out with shape {tuple(tensor.shape)} instead of its saved "
                f"shape {expected[name]} (an empty tensor is a ZeRO-3 partition placeholder, the bug of "
                "Lightning #18648); the checkpoint cannot be consolidated, use another one"
            )
    module = first["module"]
    buffers = {name: module[name] for name in first.get("buffer_names", []) if name in module}
    combined = {name: _finish(tensor) for name, tensor in {**buffers, **params}.items()}
    for alias, source in (first.get("shared_params") or {}).items():
        if source in combined:
            combined[alias] = combined[source]  # one tensor, tied as in the model
    missing = [name for name in module if name not in combined]
    if missing:
        raise FulmenCheckpointError(
            f"{where}: no saved values for {missing[:5]} (of {len(missing)}); the checkpoint is incomplete"
        )
    ordered = OrderedDict((name, combined[name]) for name in module)  # the model's own order
    ordered.update((name, tensor) for name, tensor in combined.items() if name not in ordered)
    return ordered
