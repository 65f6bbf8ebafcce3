"""Turning a Fabric user's ``{"model": m, "optimizer": o, "step": 3}`` into plain
checkpoint data and back, in place, through the strategy (which may hold shards)."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError
from fulmen.fabric.wrappers import FabricModule, FabricOptimizer


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, FabricModule):
        return obj.module
    if isinstance(obj, FabricOptimizer):
        return obj.optimizer
    return obj


def collect_state(state: Dict[str, Any], strategy: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in state.items():
        value = _unwrap(value)
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
        target = _unwrap(target)
        if isinstance(target, nn.Module):
            strategy.load_module_state_dict(target, saved, strict=strict)
        elif isinstance(target, torch.optim.Optimizer):
            strategy.load_optimizer_state_dict(target, saved)
        elif hasattr(target, "load_state_dict") and callable(target.load_state_dict):
            target.load_state_dict(saved)
        else:
            state[key] = saved
    return {key: value for key, value in checkpoint.items() if key not in state}
