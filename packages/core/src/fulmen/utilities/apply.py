"""Walk nested batches (dicts, lists, tuples, namedtuples, dataclasses) applying a function."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, dict):
        out = {k: apply_to_tensors(v, fn) for k, v in data.items()}
        if type(data) is dict:
            return out
        try:
            return type(data)(out)
        except TypeError:  # e.g. defaultdict: keep the values, lose the subclass
            return out
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, fn) for v in data))
    if isinstance(data, (list, tuple)):
        # Tensors handled inline (the usual (x, y) batch): no recursive call per item.
        return type(data)([fn(v) if isinstance(v, torch.Tensor) else apply_to_tensors(v, fn) for v in data])
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), fn)
            for f in dataclasses.fields(data)
            if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def move_data_to_device(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor of a batch to ``device``. ``non_blocking`` is the accelerator's
    call (``Accelerator.non_blocking_copies``): only it knows whether a copy that returns
    early is still ordered before the kernels that read it."""
    if device.type == "cpu":

        def move(t: torch.Tensor) -> torch.Tensor:
            # ``is_cpu`` is a flag read; ``t.device`` would build a device object per tensor.
            return t if t.is_cpu else t.to(device)

    else:

        def move(t: torch.Tensor) -> torch.Tensor:
            # ``to`` returns the tensor itself when it is already there; comparing first is cheaper.
            return t if t.device == device else t.to(device, non_blocking=non_blocking)

    kind = type(data)
    if kind is list or kind is tuple:  # the usual (x, y) batch, handled without recursion
        if device.type == "cpu":  # and without a call per tensor already there
            return kind([
                v if isinstance(v, torch.Tensor) and v.is_cpu else move(v) if isinstance(v, torch.Tensor) else apply_to_tensors(v, move)
                for v in data
            ])
        return kind([move(v) if isinstance(v, torch.Tensor) else apply_to_tensors(v, move) for v in data])
    return apply_to_tensors(data, move)


def first_batch_size(data: Any) -> int | None:
    """Size of dimension 0 of the first tensor found; no device sync (shape is host data)."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0]) if data.dim() > 0 else 1
    if isinstance(data, dict):
        values = data.values()
    elif isinstance(data, (list, tuple)):
        values = data
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        values = [getattr(data, f.name) for f in dataclasses.fields(data)]
    else:
        return None
    for value in values:
        size = first_batch_size(value)
        if size is not None:
            return size
    return None
