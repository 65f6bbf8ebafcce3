"""Turning a Fabric user's ``{"model": m, "optimizer": o, "step": 3}`` into plain
checkpoint data and back, in place, through the strategy (which may hold shards)."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.fabric.wrappers import FabricModule, FabricOptimizer


def unwrap(obj: Any) -> Any:
    """The module or optimizer inside a Fabric wrapper; anything else as it is."""
    if isinstance(obj, FabricModule):
        return obj.module
    if isinstance(obj, FabricOptimizer):
        return obj.optimizer
    return obj


def collect_state(state: Dict[str, Any], strategy: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in state.items():
        value = unwrap(value)
        if isinstance(value, nn.Module):
            out[key] = strategy.module_state_dict(value)
        elif isinstance(value, torch.optim.Optimizer):
            out[key] = strategy.optimizer_state_dict(value)
        elif hasattr(value, "state_dict") and callable(value.state_dict):
            out[key] = value.state_dict()
        else:
            out[key] = value
    return out


def restore_state(checkpoint: Dict[str, Any], state: Dict[str, Any], strategy: Any, strict: bool = True) -> Dict[str, Any]:
    missing = [key for key in state if key not in checkpoint]
    if missing and strict:
        raise FulmenCheckpointError(
            f"the checkpoint has no entry for {missing}; it holds {sorted(checkpoint)}. "
            "Pass strict=False to restore only what is there"
        )
    for key, target in state.items():
        if key not in checkpoint:
            continue
        saved = checkpoint[key]
        target = unwrap(target)
        if isinstance(target, nn.Module):
            strategy.load_module_state_dict(target, saved, strict=strict)
        elif isinstance(target, torch.optim.Optimizer):
            strategy.load_optimizer_state_dict(target, saved)
        elif hasattr(target, "load_state_dict") and callable(target.load_state_dict):
            target.load_state_dict(saved)
        else:
            state[key] = saved
    return {key: value for key, value in checkpoint.items() if key not in state}


def check_filter(filter: Any, state: Dict[str, Any]) -> None:
    """``fabric.save(filter=...)``: a dict from state keys to ``fn(name, value) -> bool``."""
    if not isinstance(filter, dict):
        raise FulmenConfigError(
            f"fabric.save(filter={filter!r}): filter must be a dict from state keys to functions "
            "fn(name, value) -> bool, e.g. {'model': lambda name, value: 'lora' in name}"
        )
    unknown = sorted(set(filter) - set(state))
    if unknown:
        raise FulmenConfigError(
            f"fabric.save(filter=...) names {unknown}, which the state does not hold; its keys are {sorted(state)}"
        )
    for key, fn in filter.items():
        if not callable(fn):
            raise FulmenConfigError(f"fabric.save(filter=...)[{key!r}] is {fn!r}, not a function fn(name, value) -> bool")


def apply_filter(checkpoint: Dict[str, Any], filter: Dict[str, Any]) -> None:
    """Keep, under each filtered key, the state-dict entries its function accepts (in place).
    An entry with nothing accepted stays as an empty dict, so loading it names what is missing."""
    for key, keep in filter.items():
        saved = checkpoint[key]
        if not isinstance(saved, dict):
            raise FulmenConfigError(
                f"fabric.save(filter=...)[{key!r}]: state[{key!r}] is a {type(saved).__name__}, not a module, "
                "optimizer or state dict, so there are no entries to filter; drop it from filter="
            )
        checkpoint[key] = {name: value for name, value in saved.items() if keep(name, value)}


def read_raw_state(path: Any) -> Dict[str, Any]:
    """A state dict saved by plain ``torch.save(obj.state_dict(), path)`` (``Fabric.load_raw``),
    read with ``weights_only=True``; a fulmen file's checksum is checked as well."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    return TorchCheckpointIO(verify=_has_integrity_footer(path)).load_checkpoint(path)


def _has_integrity_footer(path: Any) -> bool:
    from fulmen.io import integrity

    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            if handle.tell() < integrity.FOOTER_SIZE:
                return False
            handle.seek(-integrity.FOOTER_SIZE, 2)
            return handle.read(len(integrity.MAGIC)) == integrity.MAGIC
    except (IsADirectoryError, FileNotFoundError):
        return False  # load_checkpoint names the problem
