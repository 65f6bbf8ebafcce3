"""Choosing layers by class, for sharding units and activation checkpointing.

A policy names the repeated block of a model (``{"GPT2Block"}``, ``"LlamaDecoderLayer"``,
the class itself, or a callable ``module -> bool``). ``"auto"`` asks the model: a
``transformers`` model lists the blocks that must not be split across devices in
``_no_split_modules``, which is exactly the unit one wants to shard and recompute. Names
are checked against the model, so a typo is an error instead of a silently unsharded run.

Nothing here imports ``transformers``: ``_no_split_modules`` is read as a plain attribute.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Set, Type, Union

from torch import nn

from fulmen.errors import FulmenConfigError

Policy = Union[None, bool, Type[nn.Module], str, Iterable[Union[Type[nn.Module], str]], Callable[[nn.Module], bool]]

AUTO = "auto"


def no_split_modules(root: nn.Module) -> Set[str]:
    """The block class names that the model's own ``_no_split_modules`` declares (every
    submodule that defines it contributes, so a model inside a wrapper such as a peft
    ``PeftModel`` or a fulmen ``Module`` is found)."""
    names: Set[str] = set()
    for module in root.modules():
        declared = getattr(module, "_no_split_modules", None)
        if declared:
            names.update(str(n) for n in declared)
    return names


def _class_names(module: nn.Module) -> Iterable[str]:
    return (c.__name__ for c in type(module).__mro__)


def policy_predicate(policy: Policy, option: str) -> Optional[Callable[[nn.Module], bool]]:
    """``policy`` (classes, class names, or a callable ``module -> bool``) as a predicate;
    ``None``/``False`` select nothing. ``"auto"`` must be resolved first (:func:`resolve_policy`)."""
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
        return lambda module: isinstance(module, classes) or any(n in names for n in _class_names(module))
    if callable(policy):
        return policy
    raise FulmenConfigError(f"{option}={policy!r} is not a class, a class name, a set of them or a callable")


def resolve_policy(root: nn.Module, policy: Policy, option: str) -> Optional[Callable[[nn.Module], bool]]:
    """The predicate for ``policy`` on this model, after checking that every class *name*
    it gives exists in the model (the error lists the classes that do).

    ``"auto"`` (or a set containing it) stands for the model's ``_no_split_modules``; a
    model that declares none gets no units from it (``None``)."""
    if isinstance(policy, str) and policy == AUTO:
        policy = {AUTO}
    if isinstance(policy, (set, frozenset, list, tuple)) and AUTO in policy:
        declared = no_split_modules(root)
        policy = (set(policy) - {AUTO}) | declared
        if not policy:
            return None
    if isinstance(policy, str):
        policy = {policy}
    if isinstance(policy, (set, frozenset, list, tuple)):
        wanted = {p for p in policy if isinstance(p, str)}
        present = {n for m in root.modules() for n in _class_names(m)}
        unknown = sorted(wanted - present)
        if unknown:
            blocks = sorted({type(m).__name__ for m in root.modules() if m is not root and next(m.children(), None)})
            raise FulmenConfigError(
                f"{option} names {', '.join(repr(n) for n in unknown)}, which no module of {type(root).__name__} "
                f"is; classes with submodules here: {', '.join(blocks[:20]) or '(none)'}"
            )
    return policy_predicate(policy, option)


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

        body = {"forward": forward, "_fulmen_activation_checkpointing": True}
        subclass = type(f"Checkpointed{cls.__name__}", (cls,), body)
        subclass.__module__ = cls.__module__
        subclass.__qualname__ = f"Checkpointed{cls.__qualname__}"
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


def checkpoint_layers(root: nn.Module, policy: Policy = AUTO) -> int:
    """Activation checkpointing by layer class on any strategy (single device, DDP): the
    blocks ``policy`` selects recompute their activations in backward. Returns how many
    blocks were changed; an ``"auto"`` policy on a model without ``_no_split_modules`` is an
    error, since nothing would be checkpointed."""
    predicate = resolve_policy(root, policy, "activation checkpointing policy")
    modules = select_modules(root, predicate)
    if not modules:
        raise FulmenConfigError(
            f"the activation checkpointing policy {policy!r} selects no module of {type(root).__name__}; name "
            "the block class (for example {'GPT2Block'})"
        )
    return apply_activation_checkpointing(modules)
