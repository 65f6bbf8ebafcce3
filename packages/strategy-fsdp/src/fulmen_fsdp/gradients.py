"""Gradients of sharded modules: their total norm (for clipping) and skipping their
reduce-scatter while gradients accumulate."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List

import torch
from torch import nn
from torch.distributed.tensor import DTensor


@contextlib.contextmanager
def without_gradient_sync(units: List[nn.Module]):
    """Skip the reduce-scatter of gradients of ``units`` while inside (accumulation
    micro-batches); synchronisation is switched back on when leaving."""
    for unit in units:
        unit.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_requires_gradient_sync(True, recurse=False)


def total_gradient_norm(grads: List[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """The norm of all ``grads`` together, the same on every rank.

    Sharded (DTensor) gradients are grouped by device mesh: torch computes each group's
    norm from the local shards and one all-reduce; the partial norms of the groups and of
    any plain (replicated) gradients are then combined like the elements of one vector."""
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    groups: Dict[Any, List[torch.Tensor]] = {}
    for grad in grads:
        key = grad.device_mesh if isinstance(grad, DTensor) else None
        groups.setdefault(key, []).append(grad)
    norms = []
    for members in groups.values():
        norm = torch.nn.utils.get_total_norm(members, norm_type)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norms.append(norm)
    if len(norms) == 1:
        return norms[0]
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.float().to(device) for n in norms]), norm_type)
