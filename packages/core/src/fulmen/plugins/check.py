"""``fulmen plugins --check``: does the installed set match the configuration?

Meant for a curated distribution's CI (and for a user who wonders why a Trainer refuses to
start): it reports, without training anything, every required plugin that is missing, has
the wrong version or cannot load, every installed plugin that is broken or incompatible,
plugins that claim the same name, defaults that name nothing, and allow-list entries that
match no installed plugin. Exit status 0 means none of these; 1 means at least one.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from importlib import metadata
from typing import Any, Dict, List, Tuple

from fulmen.errors import FulmenError, FulmenPluginWarning
from fulmen.plugins import config as plugin_config
from fulmen.plugins import discovery, policy


def collect() -> Dict[str, Any]:
    """Everything ``--check`` reports, as plain data."""
    problems: List[str] = []
    try:
        cfg = plugin_config.active()
    except FulmenError as exc:
        problems.append(f"the configuration cannot be read: {exc}")
        cfg = plugin_config.PluginConfig()
    plugin_set, build_warnings = _build(problems)
    records = list(discovery.records().values())
    try:
        allow, deny = policy.effective_lists()
    except FulmenError:
        allow, deny = cfg.allow, cfg.deny
    disabled = plugin_set.disabled if plugin_set is not None else {}

    problems += plugin_config.requirement_problems(cfg, records, deny, disabled)
    for record in records:
        if record.name in disabled:
            continue
        if record.status in (discovery.FAILED, discovery.INCOMPATIBLE) and not policy.is_required(cfg, record):
            problems.append(
                f"plugin {record.name!r} ({record.distribution} {record.version}) is {record.status}: {record.reason}"
            )
    problems += _duplicate_entry_points()
    problems += [message for message in build_warnings if "already registered" in message]
    if plugin_set is not None:
        problems += _default_problems(cfg, plugin_set.registry)
    problems += _allow_problems(cfg, records)

    return {
        "ok": not problems,
        "fulmen_version": discovery.fulmen_version(),
        "config": {**cfg.describe(), "allow": sorted(allow) if allow is not None else None, "deny": sorted(deny or ())},
        "plugins": [
            {
                "name": r.name,
                "distribution": r.distribution,
                "version": r.version,
                "status": discovery.DISABLED if r.name in disabled else r.status,
                "reason": disabled.get(r.name, r.reason),
            }
            for r in records
        ],
        "problems": problems,
    }


def run_check(as_json: bool = False) -> int:
    report = collect()
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_report(report)
    return 0 if report["ok"] else 1


def _build(problems: List[str]) -> Tuple[Any, List[str]]:
    from fulmen.plugins import manager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FulmenPluginWarning)
        try:
            plugin_set = manager.build()
        except FulmenError as exc:
            problems.append(str(exc))
            plugin_set = None
    messages = []
    for warning in caught:
        if issubclass(warning.category, FulmenPluginWarning):
            messages.append(str(warning.message))
        else:  # not ours to judge: hand it on
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return plugin_set, messages


def _duplicate_entry_points() -> List[str]:
    owners: Dict[str, List[str]] = {}
    for ep in metadata.entry_points(group=discovery.ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        owners.setdefault(ep.name, []).append(dist.metadata["Name"] if dist is not None else "unknown")
    return [
        f"plugin name {name!r} is declared by several distributions ({', '.join(dists)}); only the first "
        f"is used. Fix: uninstall one of them or rename its entry point"
        for name, dists in sorted(owners.items())
        if len(dists) > 1
    ]


def _default_problems(cfg: plugin_config.PluginConfig, registry: Any) -> List[str]:
    problems = []
    for kind, (value, source) in cfg.defaults.items():
        names = value if isinstance(value, list) else [] if value is False else [value]
        for name in names:
            if not plugin_config.names_a_default(registry, kind, name):
                problems.append(
                    f"the default {kind} {name!r} (from {source}) is not registered: "
                    f"{registry.unknown_name_message(kind, str(name))}"
                )
    return problems


def _allow_problems(cfg: plugin_config.PluginConfig, records: List[discovery.PluginRecord]) -> List[str]:
    problems = []
    for layer in cfg.layers:
        for name in sorted(layer.allow or ()):
            if not any(policy.is_listed(record, {name}) for record in records):
                problems.append(
                    f"the allow list of {layer.source} names {name!r}, but no installed plugin or distribution "
                    f"is called that"
                )
    return problems


def _print_report(report: Dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"fulmen {report['fulmen_version']}")
    if cfg["sources"]:
        print("configuration: " + "; ".join(cfg["sources"]))
    else:
        print("configuration: none (no fulmen.toml, [tool.fulmen], fulmen.config entry point or FULMEN_* variable)")
    print("allow: " + (", ".join(cfg["allow"]) if cfg["allow"] is not None else "every installed plugin"))
    print("deny: " + (", ".join(cfg["deny"]) or "none"))
    if cfg["require"]:
        print("require: " + ", ".join(f"{name}{spec}" for name, spec in cfg["require"].items()))
    if cfg["defaults"]:
        print("defaults: " + ", ".join(f"{kind}={value!r}" for kind, value in cfg["defaults"].items()))
    counts = Counter(row["status"] for row in report["plugins"])
    print("plugins: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none installed"))
    for row in report["plugins"]:
        line = f"  {row['name']} ({row['distribution']} {row['version']}): {row['status']}"
        print(line + (f" - {row['reason']}" if row["reason"] else ""))
    if report["ok"]:
        print("OK: the installed plugins match the configuration")
        return
    problems = report["problems"]
    print(f"{len(problems)} problem(s):")
    for problem in problems:
        print(f"  - {problem}")
