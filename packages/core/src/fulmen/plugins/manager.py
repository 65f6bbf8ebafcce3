"""One pluggy manager per Trainer/Fabric: built-ins, discovered plugins, explicit plugins.

Owning the manager per instance (not per process) keeps two Trainers in one process from
seeing each other's callbacks or modules, while the expensive part, scanning metadata and
importing plugin modules, is still done once per process by ``discovery``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import pluggy

from fulmen import hookspecs
from fulmen.errors import FulmenPluginWarning, FulmenUserCodeError
from fulmen.plugins import deprecations, discovery, hook_arguments, policy, settings, tracing
from fulmen.plugins.registry import KINDS, Registry, UnloadedPlugin

_REGISTRATION_KIND = {
    "register_accelerators": "accelerator",
    "register_strategies": "strategy",
    "register_precisions": "precision",
    "register_loggers": "logger",
    "register_callbacks": "callback",
    "register_environments": "environment",
    "register_checkpoint_io": "checkpoint_io",
    "register_profilers": "profiler",
}
assert set(_REGISTRATION_KIND) == set(hookspecs.REGISTRATION_HOOKS)
assert set(_REGISTRATION_KIND.values()) == set(KINDS)


class HookCarrier:
    """Mixin for objects whose overridden methods are hooks by name (Callback, Module).

    Only methods a subclass overrides are registered, so the many hooks a callback does
    not care about cost nothing per step.
    """

    _fulmen_hook_base: type = object
    # Methods with a hook's name that the Trainer calls directly instead (Lightning's
    # ``Module.setup(stage)``), so they must not be called a second time as hooks.
    _fulmen_direct_methods: frozenset = frozenset()


def _overridden(plugin: Any, name: str) -> bool:
    base = getattr(type(plugin), "_fulmen_hook_base", None)
    impl = getattr(type(plugin), name, None)
    if impl is None:
        return name in getattr(plugin, "__dict__", {})  # set on the instance
    return base is None or getattr(base, name, None) is not impl


class FulmenPluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        deprecations.apply(self)  # pluggy's warn_on_impl for the hooks listed there
        tracing.install(self)  # FULMEN_TRACE_PLUGINS=1

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        if isinstance(plugin, HookCarrier):
            return {} if _is_carrier_hook(plugin, name) else None
        if isinstance(plugin, hook_arguments.AdaptedCarrier):
            return {} if name in _LIFECYCLE and name in plugin.__dict__ else None
        return super().parse_hookimpl_opts(plugin, name)

    def register_carrier(self, obj: Any, what: str) -> Any:
        """Register a Callback/Module/DataModule and return what was registered: the object
        itself, or an ``AdaptedCarrier`` when some hooks are written Lightning's way
        (positional, any names) and need an adapter (see ``fulmen.plugins.hook_arguments``)."""
        hooks = [name for name in sorted(_LIFECYCLE) if _is_carrier_hook(obj, name)]
        registered, _ = hook_arguments.carrier_for_registration(obj, hooks, what)
        try:
            self.register(registered, name=f"{what}:{type(obj).__qualname__}:{id(obj)}")
            return registered
        except pluggy.PluginValidationError as exc:
            raise FulmenUserCodeError(
                f"{what} {type(obj).__qualname__} defines a hook with an argument fulmen does "
                f"not pass: {exc}. A hook may take any subset of its documented arguments "
                f"(see fulmen.hookspecs), by name; rename the argument or drop it"
            ) from exc


_LIFECYCLE = frozenset(hookspecs.LIFECYCLE_HOOKS)


def _is_carrier_hook(plugin: Any, name: str) -> bool:
    # Only hook names are looked at: touching every attribute of an nn.Module would run
    # properties that may raise before the module is attached.
    if name in _LIFECYCLE and name not in plugin._fulmen_direct_methods and _overridden(plugin, name):
        return inspect.isroutine(getattr(plugin, name, None))
    return False


@dataclass
class PluginSet:
    """What one Trainer/Fabric sees: its manager, its registry and the plugin outcomes."""

    manager: FulmenPluginManager
    registry: Registry
    records: List[discovery.PluginRecord] = field(default_factory=list)
    disabled: Dict[str, str] = field(default_factory=dict)
    config: Any = None  # fulmen.plugins.settings.PluginConfig: allow/deny/require/defaults


def _run_registrations(pm: FulmenPluginManager, registry: Registry, dist_of: Dict[str, Any]):
    for hook_name, kind in _REGISTRATION_KIND.items():
        caller = getattr(pm.hook, hook_name)
        # Call each implementation on its own so every name is attributed to its plugin, in
        # the order the plugins were registered (built-ins, then discovery order), so that
        # on a name collision the first one is kept. pluggy's own list is arranged for its
        # calls (it calls from the end, tryfirst/trylast move entries), hence the sort.
        order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
        impls = sorted(caller.get_hookimpls(), key=lambda impl: order.get(impl.plugin_name, len(order)))
        for impl in impls:
            plugin_name = impl.plugin_name
            record = dist_of.get(plugin_name)
            dist = record.distribution if record is not None else None
            register = registry.registrar(kind, plugin_name, dist)
            before = set(registry.tables[kind])
            tracing.call_registration(pm, hook_name, impl, register)
            if record is not None:
                record.registers[kind] = sorted(
                    set(record.registers.get(kind, ())) | (set(registry.tables[kind]) - before)
                )


def build(
    allow: Optional[Sequence[str] | str] = None,
    deny: Optional[Sequence[str] | str] = None,
    explicit: Sequence[Any] = (),
) -> PluginSet:
    """Create the manager of one Trainer/Fabric and fill its registry."""
    from fulmen import builtins

    pm = FulmenPluginManager()
    registry = Registry()
    pm.register(builtins, name="fulmen")
    allow_set, deny_set = policy.effective_lists(allow, deny)
    plugin_set = PluginSet(pm, registry, config=settings.active())
    by_plugin: Dict[str, discovery.PluginRecord] = {}
    for record in discovery.records().values():
        plugin_set.records.append(record)
        excluded = policy.exclusion(record, allow_set, deny_set, plugin_set.config)
        if excluded is not None:
            plugin_set.disabled[record.name] = excluded.reason
            _mark_unloaded(registry, record, discovery.DISABLED, excluded.reason, excluded.remedy)
            continue
        plugin = discovery.load(record)
        if plugin is None:
            _mark_unloaded(registry, record, record.status, record.reason, discovery.how_to_fix(record))
            continue
        if pm.is_registered(plugin):
            continue
        try:
            pm.register(plugin, name=record.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            first_time = record.status != discovery.FAILED
            record.status = discovery.FAILED
            record.reason = f"its hooks do not match fulmen's hook specifications: {exc}"
            remedy = f"to load it, upgrade {record.distribution or 'the plugin'} to a release built for this fulmen"
            _mark_unloaded(registry, record, discovery.FAILED, record.reason, remedy)
            if first_time:  # like a failed import: warn once per process, never crash
                warnings.warn(
                    f"fulmen plugin {record.name!r} from {record.distribution or 'unknown'} is "
                    f"skipped: {record.reason}. Fix: upgrade {record.distribution or 'the plugin'}, "
                    f"or deny it with FULMEN_PLUGINS_DENY={record.name}",
                    FulmenPluginWarning,
                    stacklevel=4,
                )
            continue
        by_plugin[record.name] = record
        if record.distribution:
            registry.loaded_distributions[record.distribution] = record.version or "?"
    for obj in explicit:
        if isinstance(obj, str):
            obj = discovery.import_object(obj)
        if not pm.is_registered(obj):
            pm.register(obj)
    _run_registrations(pm, registry, by_plugin)
    return plugin_set


def _mark_unloaded(registry: Registry, record: discovery.PluginRecord, outcome: str, reason: str, remedy: str) -> None:
    registry.mark_unloaded(UnloadedPlugin(
        plugin=record.name,
        distribution=record.distribution,
        version=record.version,
        outcome=outcome,
        reason=reason,
        remedy=remedy,
        # what it registered when it last loaded in this process, if it did
        registers={kind: list(names) for kind, names in record.registers.items()},
    ))
