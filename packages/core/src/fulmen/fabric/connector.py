"""Turns ``accelerator=``, ``strategy=``, ``devices=``, ``precision=``, ``plugins=`` into one
configured ``Strategy``; the only place where those names are interpreted, for the Trainer
and Fabric users alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

from fulmen.accelerators.base import Accelerator
from fulmen.environments.base import ClusterEnvironment
from fulmen.errors import FulmenConfigError
from fulmen.io.checkpoint_io import CheckpointIO
from fulmen.plugins.registry import PRECISION_ALIASES, Registry, canonical_precision
from fulmen.precision.base import Precision
from fulmen.strategies.base import Strategy

# What ``plugins=`` may hold besides hook-implementing objects and names.
STRATEGY_PARTS = (Precision, CheckpointIO, ClusterEnvironment)


@dataclass
class SortedPlugins:
    precision: Optional[Precision] = None
    checkpoint_io: Optional[CheckpointIO] = None
    environment: Optional[ClusterEnvironment] = None
    hook_plugins: List[Any] = field(default_factory=list)


def sort_plugins(plugins: Optional[Sequence[Any]], registry: Registry) -> SortedPlugins:
    """Split ``plugins=`` into the strategy's parts and objects that implement hooks."""
    out = SortedPlugins()
    for plugin in plugins or ():
        if isinstance(plugin, str):
            plugin = _plugin_by_name(plugin, registry)
        for attr, kind in (("precision", Precision), ("checkpoint_io", CheckpointIO), ("environment", ClusterEnvironment)):
            if isinstance(plugin, kind):
                if getattr(out, attr) is not None:
                    raise FulmenConfigError(
                        f"plugins= contains two {kind.__name__} objects ({getattr(out, attr)!r} and "
                        f"{plugin!r}); keep one"
                    )
                setattr(out, attr, plugin)
                break
        else:
            out.hook_plugins.append(plugin)
    return out


def _plugin_by_name(name: str, registry: Registry) -> Any:
    from fulmen.plugins import discovery

    if name in discovery.records():
        # An installed plugin asked for by name: load it or raise with the recorded reason.
        return discovery.require(name)
    for kind in ("checkpoint_io", "environment", "precision"):
        if name in registry.tables[kind]:
            return registry.create(kind, name)
    if name in PRECISION_ALIASES:
        return registry.create("precision", PRECISION_ALIASES[name])
    known = registry.names("checkpoint_io") + registry.names("environment")
    raise FulmenConfigError(
        f"plugins=[{name!r}] names no checkpoint IO or cluster environment. Available: "
        f"{', '.join(repr(n) for n in known)}"
    )


def resolve_precision(precision: Union[str, int, Precision, None], registry: Registry) -> Precision:
    if isinstance(precision, Precision):
        return precision
    name = "32-true" if precision is None else str(precision)
    return registry.create("precision", canonical_precision(name))


def resolve_accelerator(accelerator: Union[str, Accelerator, None], registry: Registry) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    name = "auto" if accelerator is None else str(accelerator)
    if name == "gpu":
        name = _best_available(registry, only=("cuda", "mps")) or "cuda"
    if name == "auto":
        name = _best_available(registry) or "cpu"
    accelerator_obj = registry.create("accelerator", name)
    if not type(accelerator_obj).is_available():
        raise FulmenConfigError(
            f"accelerator={name!r} was requested but is not available on this machine "
            f"(for example no driver or no device found); use accelerator='auto' or 'cpu'"
        )
    return accelerator_obj


def _best_available(registry: Registry, only: Optional[Sequence[str]] = None) -> Optional[str]:
    best, best_priority = None, None
    for entry in registry.entries("accelerator"):
        if only is not None and entry.name not in only:
            continue
        priority = getattr(entry.factory, "auto_priority", None)
        is_available = getattr(entry.factory, "is_available", None)
        if priority is None or is_available is None:
            continue  # not a class that can answer cheaply: only chosen by name
        if (best_priority is None or priority > best_priority) and is_available():
            best, best_priority = entry.name, priority
    return best


def detect_environment(registry: Registry) -> ClusterEnvironment:
    candidates = sorted(
        registry.entries("environment"),
        key=lambda e: getattr(e.factory, "detection_priority", 0),
        reverse=True,
    )
    for entry in candidates:
        detect = getattr(entry.factory, "detect", None)
        if detect is not None and detect():
            return entry.factory()
    return registry.create("environment", "local")


def resolve_strategy(
    registry: Registry,
    accelerator: Union[str, Accelerator, None] = "auto",
    strategy: Union[str, Strategy, None] = "auto",
    devices: Any = "auto",
    num_nodes: int = 1,
    precision: Union[str, int, Precision, None] = "32-true",
    plugins: Optional[Sequence[Any]] = None,
) -> tuple[Strategy, List[Any]]:
    """The configured strategy, and the ``plugins=`` entries that only implement hooks."""
    sorted_plugins = sort_plugins(plugins, registry)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise FulmenConfigError(f"num_nodes={num_nodes!r} must be a positive integer")

    strategy_obj: Optional[Strategy] = strategy if isinstance(strategy, Strategy) else None
    if strategy_obj is not None and strategy_obj.accelerator is not None:
        accelerator_obj = strategy_obj.accelerator
    else:
        accelerator_obj = resolve_accelerator(accelerator, registry)
    parallel_devices = type(accelerator_obj).parse_devices(devices)

    if sorted_plugins.precision is not None and precision not in (None, "32-true", 32, "32"):
        raise FulmenConfigError(
            f"precision={precision!r} and a Precision object in plugins= "
            f"({sorted_plugins.precision!r}) both set the precision; keep one"
        )
    if sorted_plugins.precision is not None:
        precision_obj = sorted_plugins.precision
    elif strategy_obj is not None and strategy_obj.precision is not None:
        precision_obj = strategy_obj.precision
    else:
        precision_obj = resolve_precision(precision, registry)
    reason = accelerator_obj.unsupported_precision_reason(precision_obj)
    if reason:
        raise FulmenConfigError(f"{reason} (accelerator {accelerator_obj.name!r})")

    if strategy_obj is None:
        name = "auto" if strategy is None else str(strategy)
        if name == "auto":
            total = len(parallel_devices) * num_nodes
            name = type(accelerator_obj).auto_strategy(total) or ("ddp" if total > 1 else "single_device")
            if name == "ddp" and name not in registry.tables["strategy"]:
                raise FulmenConfigError(
                    f"devices={devices!r} with num_nodes={num_nodes} needs a multi-process "
                    f"strategy, and no 'ddp' strategy is registered; use devices=1"
                )
        strategy_obj = registry.create("strategy", name)

    strategy_obj.accelerator = strategy_obj.accelerator or accelerator_obj
    strategy_obj.precision = strategy_obj.precision or precision_obj
    if sorted_plugins.checkpoint_io is not None:
        strategy_obj.checkpoint_io = sorted_plugins.checkpoint_io
    if strategy_obj.checkpoint_io is None:
        strategy_obj.checkpoint_io = registry.create("checkpoint_io", "torch")
    if sorted_plugins.environment is not None:
        strategy_obj.cluster_environment = sorted_plugins.environment
    if strategy_obj.cluster_environment is None:
        strategy_obj.cluster_environment = detect_environment(registry)
    if strategy_obj.parallel_devices is None:
        strategy_obj.parallel_devices = parallel_devices
    strategy_obj.num_nodes = num_nodes
    return strategy_obj, sorted_plugins.hook_plugins
