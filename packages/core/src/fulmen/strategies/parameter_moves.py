"""Keeping an optimizer pointed at its parameters when moving a module replaced them.

``module.to(device)`` normally swaps each parameter's data in place, so an optimizer built
before the move still holds the right objects. Where the two devices' tensors cannot share
one ``Parameter`` (CPU to XLA), torch creates new parameter objects instead, and an
optimizer built on the CPU module (``fabric.setup(model, optimizer)``) would go on stepping
the old ones, silently training nothing.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn


def replaced_parameters(before: List[nn.Parameter], module: nn.Module) -> Dict[int, nn.Parameter]:
    """``id(old parameter) -> new parameter`` for those the move replaced (empty when none was)."""
    return {id(old): new for old, new in zip(before, module.parameters()) if old is not new}


def repoint_optimizer(optimizer: torch.optim.Optimizer, replaced: Dict[int, nn.Parameter]) -> None:
    """Make ``optimizer``'s groups and state refer to the new parameters."""
    if not replaced:
        return
    for group in optimizer.param_groups:
        group["params"] = [replaced.get(id(p), p) for p in group["params"]]
    for param in list(optimizer.state):
        new = replaced.get(id(param))
        if new is not None:
            optimizer.state[new] = optimizer.state.pop(param)
