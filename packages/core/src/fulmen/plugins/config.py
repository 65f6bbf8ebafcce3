"""Applying a curated distribution's configuration to a Trainer/Fabric: required plugins
and defaults.

``fulmen.plugins.settings`` reads and merges the configuration (``fulmen.toml``,
``[tool.fulmen]``, ``fulmen.config`` entry points, ``FULMEN_*`` variables);
``fulmen.plugins.policy`` decides which plugins load from its allow and deny lists. What is
left happens here, when a Trainer/Fabric is built:

- ``require``: every required plugin must be installed at a matching version, loadable, and
  not denied; otherwise the Trainer/Fabric refuses to start, before any training, with one
  line per problem (``enforce``);
- ``defaults``: an accelerator, strategy, precision or logger the user left unset (``"auto"``
  or ``None``) is taken from the configuration, and must name something registered
  (``apply_defaults``, ``default_logger``). An argument the user passes beats every default.

The reading side's public names (``active``, ``PluginConfig``, ``parse_requirement_list``,
``ENV_DEFAULTS``, ...) stay importable from here, where callers have always found them.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fulmen.errors import FulmenConfigError, FulmenPluginError
from fulmen.plugins import discovery, policy
from fulmen.plugins.registry import OFFICIAL_PLUGINS, PRECISION_ALIASES
# Re-exported (see __all__): the reading side's public names, where callers always found them.
from fulmen.plugins.settings import (
    CONFIG_ENTRY_POINT_GROUP,
    CONFIG_FILE,
    DEFAULT_KINDS,
    ENV_CONFIG,
    ENV_DEFAULTS,
    ENV_REQUIRE,
    KEYS,
    Layer,
    PluginConfig,
    RequiredPlugin,
    active,
    environment_layer,
    find_project_file,
    installed_layers,
    merge,
    parse_requirement_list,
    parse_table,
    project_layer,
)

# Names a default may hold besides the registered ones (resolved later by the connector).
EXTRA_DEFAULT_NAMES: Dict[str, Tuple[str, ...]] = {
    "accelerator": ("auto", "gpu"),
    "strategy": ("auto",),
    "precision": tuple(PRECISION_ALIASES),
    "logger": (),
}


# ---------------------------------------------------------------------------- requirements


def requirement_problems(
    config: PluginConfig,
    records: Iterable[discovery.PluginRecord],
    deny: Optional[set],
    disabled: Optional[Dict[str, str]] = None,
) -> List[str]:
    """Why the installed plugins do not meet ``config.require``; empty when they do."""
    records = list(records)
    disabled = disabled or {}
    problems = []
    for key, req in config.require.items():
        origin = ", ".join(req.sources)
        if canonicalize_name(key) == "fulmen":
            installed = discovery.fulmen_version()
            if not _version_ok(req.specifier, installed):
                problems.append(
                    f"required fulmen{req.specifier} (from {origin}) but found fulmen {installed}; "
                    f"pip install 'fulmen{req.specifier}'"
                )
            continue
        matches = [r for r in records if policy.is_listed(r, {key})]
        if not matches:
            installed = ", ".join(sorted(r.name for r in records)) or "none"
            problems.append(
                f"required plugin {key!r} ({req}, from {origin}) is not installed; installed plugins: "
                f"{installed}. Fix: pip install '{OFFICIAL_PLUGINS.get(key, key)}{req.specifier}'"
            )
            continue
        for record in matches:
            what = f"required plugin {key!r} (from {origin})"
            dist = record.distribution or record.name
            if str(req.specifier) and not _version_ok(req.specifier, record.version):
                problems.append(
                    f"{what} needs {dist}{req.specifier} but {dist} {record.version or '(unknown version)'} "
                    f"is installed. Fix: pip install '{dist}{req.specifier}'"
                )
            elif policy.is_listed(record, deny):
                problems.append(f"{what} is also denied (deny list, FULMEN_PLUGINS_DENY or deny_plugins=); "
                                f"remove it from one of the two")
            elif record.status in (discovery.FAILED, discovery.INCOMPATIBLE):
                problems.append(f"{what} is installed ({dist} {record.version}) but cannot be used: {record.reason}")
            elif record.name in disabled:
                problems.append(f"{what} is disabled: {disabled[record.name]}")
    return problems


def enforce(config: PluginConfig, plugin_set: Any) -> None:
    """Raise before any training when a required plugin is missing, mismatched or broken."""
    if not config.require:
        return
    _, deny = policy.effective_lists()
    problems = requirement_problems(config, plugin_set.records, deny, plugin_set.disabled)
    if problems:
        raise FulmenPluginError(
            "the plugin configuration is not met:\n  - " + "\n  - ".join(problems)
            + "\n(run `fulmen plugins --check` to see the whole installed set)"
        )


# ---------------------------------------------------------------------------- defaults


def apply_defaults(
    config: PluginConfig, registry: Any, accelerator: Any, strategy: Any, precision: Any
) -> Tuple[Any, Any, Any]:
    """The configured defaults in place of arguments the user left unset."""
    if accelerator is None or accelerator == "auto":
        accelerator = _checked_default(config, registry, "accelerator", accelerator)
    if strategy is None or strategy == "auto":
        strategy = _checked_default(config, registry, "strategy", strategy)
    if precision is None:
        precision = _checked_default(config, registry, "precision", precision)
    return accelerator, strategy, precision


def names_a_default(registry: Any, kind: str, name: Any) -> bool:
    """Can a default of ``kind`` hold ``name``: registered, or one the connector resolves."""
    return str(name) in EXTRA_DEFAULT_NAMES[kind] or str(name) in registry.tables[kind]


def _checked_default(config: PluginConfig, registry: Any, kind: str, given: Any) -> Any:
    value, source = config.default(kind)
    if value is None:
        return given
    if not names_a_default(registry, kind, value):
        raise FulmenConfigError(
            f"the default {kind} {value!r} set by {source} is not available: "
            f"{registry.unknown_name_message(kind, str(value))}"
        )
    return value


def default_logger(logger: Any, plugin_set: Any) -> Any:
    """``Trainer(logger=None/True)`` → the configured logger(s) (``False`` for none)."""
    config = getattr(plugin_set, "config", None)
    if config is not None and (logger is None or logger is True):
        value, _ = config.default("logger")
        if value is not None:
            return value
    return logger


def apply(plugin_set: Any, accelerator: Any, strategy: Any, precision: Any) -> Tuple[Any, Any, Any]:
    """For Trainer/Fabric: enforce ``require``, then fill unset arguments from ``defaults``."""
    config = getattr(plugin_set, "config", None)
    if config is None:
        return accelerator, strategy, precision
    enforce(config, plugin_set)
    return apply_defaults(config, plugin_set.registry, accelerator, strategy, precision)


# ---------------------------------------------------------------------------- helpers


def _version_ok(specifier: SpecifierSet, version: Optional[str]) -> bool:
    if not str(specifier):
        return True
    if version is None:
        return False
    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


__all__ = [
    "CONFIG_ENTRY_POINT_GROUP", "CONFIG_FILE", "DEFAULT_KINDS", "ENV_CONFIG", "ENV_DEFAULTS", "ENV_REQUIRE",
    "EXTRA_DEFAULT_NAMES", "KEYS", "Layer", "PluginConfig", "RequiredPlugin", "active", "apply", "apply_defaults",
    "default_logger", "enforce", "environment_layer", "find_project_file", "installed_layers",
    "merge", "names_a_default", "parse_requirement_list", "parse_table", "project_layer", "requirement_problems",
]

