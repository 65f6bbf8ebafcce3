"""Preparing a module for sharding: choosing the shard units, activation checkpointing, and
materialising parameters that were created on the meta device.

Nothing here talks to other processes; ``FSDPStrategy.setup_module`` puts the pieces in order.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

# Layer selection by class and activation checkpointing live in the core (single-device and
# DDP fine-tuning use them too); they are re-exported here for the strategy and older imports.
from fulmen.finetune.policies import (  # noqa: E402,F401
    Policy,
    apply_activation_checkpointing,
    policy_predicate,
    resolve_policy,
    select_modules,
)


def _direct_tensors(module: nn.Module):
    for name, tensor in module._parameters.items():
        if tensor is not None:
            yield "param", name, tensor
    for name, tensor in module._buffers.items():
        if tensor is not None:
            yield "buffer", name, tensor


def has_meta_tensors(module: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` lives on the meta device (built without storage)."""
    return any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers())


@torch.no_grad()
def materialize_meta_tensors(root: nn.Module, device: torch.device) -> List[str]:
    """Give real storage to the meta-device tensors of the sharded ``root`` and initialise
    them with each module's ``reset_parameters()``; returns the modules that had meta
    parameters or persistent buffers but no ``reset_parameters`` (their values are
    uninitialised memory until a checkpoint or ``load_pretrained`` fills them). A module
    without ``reset_parameters`` whose non-persistent buffers were on the meta device gets
    them recomputed (no file holds them), or a FulmenConfigError saying how to build it.

    One module at a time, its parameters are initialised at full size on this process and
    each rank keeps its slice: the peak is one module's parameters, never the model, and
    the values are those a non-sharded model would get from the same random state
    (initialising the shards directly would draw the same numbers for every shard on
    devices where DTensor has no distributed random generator, such as the CPU)."""
    from torch.distributed.tensor import DTensor, Replicate

    from fulmen.finetune.meta_init import fill_non_persistent_buffers, meta_non_persistent_buffers

    missing = []
    for name, module in root.named_modules():
        meta = [(kind, n, t) for kind, n, t in _direct_tensors(module) if t.is_meta]
        if not meta:
            continue
        real = {n: t.detach().clone() for kind, n, t in _direct_tensors(module) if not t.is_meta}
        non_persistent = meta_non_persistent_buffers(module)
        module.to_empty(device=device, recurse=False)
        for n, value in real.items():  # to_empty does not spare the tensors that were real
            target = getattr(module, n)
            (target.to_local() if isinstance(target, DTensor) else target).copy_(
                value.to_local() if isinstance(value, DTensor) else value
            )
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
            fill_non_persistent_buffers(module, non_persistent, device, name)
            if len(meta) > len(non_persistent):  # parameters or persistent buffers: left to a load
                missing.append(name or type(module).__name__)
            continue
        meta_names = {n for kind, n, _ in meta if kind == "param"}
        sharded_params = {}
        for n in meta_names:
            param = module._parameters[n]
            if isinstance(param, DTensor):
                sharded_params[n] = param
                full = torch.empty(param.shape, dtype=param.dtype, device=device)
                module._parameters[n] = nn.Parameter(full, requires_grad=param.requires_grad)
        try:
            reset()
            for n, param in sharded_params.items():
                full = module._parameters[n].detach()
                mesh = param.device_mesh
                local = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
                param.to_local().copy_(local.redistribute(mesh, param.placements).to_local())
        finally:
            for n, param in sharded_params.items():
                module._parameters[n] = param
    return missing
