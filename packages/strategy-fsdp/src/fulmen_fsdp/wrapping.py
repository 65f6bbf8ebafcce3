"""Preparing a module for sharding: choosing the shard units, activation checkpointing, and
materialising parameters that were created on the meta device.

Nothing here talks to other processes; ``FSDPStrategy.setup_module`` puts the pieces in order.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Type, Union

import torch
from torch import nn

from fulmen.errors import FulmenConfigError

Policy = Union[None, Type[nn.Module], str, Iterable[Union[Type[nn.Module], str]], Callable[[nn.Module], bool]]


def policy_predicate(policy: Policy, option: str) -> Optional[Callable[[nn.Module], bool]]:
    """``policy`` (classes, class names, or a callable ``module -> bool``) as a predicate."""
    if policy is None or policy is False:
        return None
    if isinstance(policy, (type, str)):
        policy = {policy}
    if isinstance(policy, (set, frozenset, list, tuple)):
        classes = tuple(p for p in policy if isinstance(p, type))
        names = {p for p in policy if isinstance(p, str)}
        bad = [p for p in policy if not isinstance(p, (type, str))]
        if bad or any(not issubclass(c, nn.Module) for c in classes):
            raise FulmenConfigError(
                f"{option}={policy!r}: give nn.Module classes (or their names), or a callable "
                "that takes a module and returns True for the ones to select"
            )
        return lambda module: isinstance(module, classes) or type(module).__name__ in names or any(
            c.__name__ in names for c in type(module).__mro__
        )
    if callable(policy):
        return policy
    raise FulmenConfigError(f"{option}={policy!r} is not a class, a set of classes or a callable")


def select_modules(root: nn.Module, predicate: Optional[Callable[[nn.Module], bool]]) -> List[nn.Module]:
    """The submodules of ``root`` (not ``root`` itself) that ``predicate`` selects, in module order."""
    if predicate is None:
        return []
    return [m for m in root.modules() if m is not root and predicate(m)]


_CHECKPOINTED: Dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """A subclass whose ``forward`` recomputes its activations in backward.

    Swapping the class (as FSDP2 itself does) instead of wrapping the module keeps the
    parameter names, so checkpoints stay interchangeable with runs without checkpointing."""
    if cls not in _CHECKPOINTED:
        from torch.utils.checkpoint import checkpoint

        def forward(self, *args, **kwargs):
            return checkpoint(super(subclass, self).forward, *args, use_reentrant=False, **kwargs)

        subclass = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward, "_fulmen_activation_checkpointing": True})
        subclass.__module__ = cls.__module__
        _CHECKPOINTED[cls] = subclass
    return _CHECKPOINTED[cls]


def apply_activation_checkpointing(modules: Iterable[nn.Module]) -> int:
    """Make each of ``modules`` recompute its activations in backward; returns how many were
    changed (modules already checkpointed are left alone)."""
    count = 0
    for module in modules:
        if not getattr(module, "_fulmen_activation_checkpointing", False):
            module.__class__ = _checkpointed_class(type(module))
            count += 1
    return count


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
    tensors but no ``reset_parameters`` (their values are uninitialised memory).

    One module at a time, its parameters are initialised at full size on this process and
    each rank keeps its slice: the peak is one module's parameters, never the model, and
    the values are those a non-sharded model would get from the same random state
    (initialising the shards directly would draw the same numbers for every shard on
    devices where DTensor has no distributed random generator, such as the CPU)."""
    from torch.distributed.tensor import DTensor, Replicate

    missing = []
    for name, module in root.named_modules():
        meta = [(kind, n, t) for kind, n, t in _direct_tensors(module) if t.is_meta]
        if not meta:
            continue
        real = {n: t.detach().clone() for kind, n, t in _direct_tensors(module) if not t.is_meta}
        module.to_empty(device=device, recurse=False)
        for n, value in real.items():  # to_empty does not spare the tensors that were real
            target = getattr(module, n)
            (target.to_local() if isinstance(target, DTensor) else target).copy_(
                value.to_local() if isinstance(value, DTensor) else value
            )
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
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
