"""``fulmen`` command line: ``fulmen plugins [--json]``, ``fulmen migrate PATH...``, the training
subcommands ``fit``/``validate``/``test``/``predict`` (``fulmen.cli.subcommands``, which need
``fulmen[cli]``), plus the subcommands plugins add through the ``register_cli_commands`` hook
(for example ``fulmen loggers replay DIR``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from fulmen.plugins import discovery

STAGE_COMMANDS = {
    "fit": "train a Module from a config file and/or --model/--data/--trainer.* options (fulmen[cli])",
    "validate": "run the validation loop once (fulmen[cli])",
    "test": "run the test loop once (fulmen[cli])",
    "predict": "run predict_step over the data (fulmen[cli])",
}


def _plugin_rows():
    from fulmen.plugins import manager

    plugin_set = manager.build()
    registry = plugin_set.registry
    rows = []
    builtin = {"name": "fulmen", "distribution": "fulmen", "version": discovery.fulmen_version(),
               "target": "fulmen.builtins", "status": "loaded", "reason": "", "requirement": "",
               "registers": {}}
    for kind, table in registry.tables.items():
        names = sorted(n for n, e in table.items() if e.plugin == "fulmen")
        if names:
            builtin["registers"][kind] = names
    builtin["unavailable"] = _unavailable_names(registry, "fulmen")
    builtin["backends"] = _backends(registry, "fulmen")
    rows.append(builtin)
    for record in plugin_set.records:
        row = record.as_dict()
        if record.name in plugin_set.disabled:
            row["status"] = discovery.DISABLED
            row["reason"] = plugin_set.disabled[record.name]
        row["unavailable"] = _unavailable_names(registry, record.name)
        row["backends"] = _backends(registry, record.name)
        rows.append(row)
    return rows


def _unavailable_names(registry, plugin: str):
    """{kind: {name: reason}} for names whose factory says it cannot work here (a factory may
    define ``unavailable_reason()`` returning None or why, e.g. a missing backend library)."""
    out = {}
    for kind, table in registry.tables.items():
        for name, entry in table.items():
            check = getattr(entry.factory, "unavailable_reason", None)
            reason = check() if entry.plugin == plugin and callable(check) else None
            if reason:
                out.setdefault(kind, {})[name] = reason
    return out


def _backends(registry, plugin: str):
    """The libraries behind a plugin's names, with their versions (a factory may define
    ``backend()`` returning e.g. "deepspeed 0.19.8", or None when it is not installed):
    which DeepSpeed a strategy will run is the first thing a bug report needs."""
    found = set()
    for table in registry.tables.values():
        for entry in table.values():
            describe = getattr(entry.factory, "backend", None)
            value = describe() if entry.plugin == plugin and callable(describe) else None
            if value:
                found.add(value)
    return sorted(found)


def _print_table(rows) -> None:
    for row in rows:
        head = f"{row['name']}  ({row['distribution'] or '?'} {row['version'] or ''})".rstrip()
        status = row["status"]
        print(f"{head}: {status}" + (f" - {row['reason']}" if row["reason"] else ""))
        if row.get("requirement"):
            print(f"    requires {row['requirement']}")
        if row.get("backends"):
            print(f"    uses {', '.join(row['backends'])}")
        for kind, names in sorted(row["registers"].items()):
            print(f"    {kind}: {', '.join(names)}")
        for kind, reasons in sorted(row.get("unavailable", {}).items()):
            for name, reason in sorted(reasons.items()):
                print(f"    {kind} {name}: unavailable - {reason}")


def cmd_plugins(args) -> int:
    if getattr(args, "check", False):
        from fulmen.plugins.check import run_check

        return run_check(as_json=args.json)
    rows = _plugin_rows()
    if args.json:
        json.dump({"fulmen_version": discovery.fulmen_version(), "plugins": rows}, sys.stdout, indent=2)
        print()
    else:
        _print_table(rows)
    return 0


def _add_plugin_commands(sub) -> None:
    """Subcommands from the ``register_cli_commands`` hook; a plugin that fails here is a
    warning, as everywhere else, and the other commands still work."""
    import warnings

    from fulmen.errors import FulmenError, FulmenPluginWarning
    from fulmen.plugins import manager

    try:
        pm = manager.build().manager
    except FulmenError as exc:  # e.g. a broken fulmen.toml, which `fulmen plugins --check` reports
        warnings.warn(f"commands from plugins are unavailable: {exc}", FulmenPluginWarning, stacklevel=2)
        return
    for impl in pm.hook.register_cli_commands.get_hookimpls():

        def register(name: str, configure, help: str = "", _plugin=impl.plugin_name) -> None:
            if name in sub.choices:
                warnings.warn(f"plugin {_plugin!r} tried to add the command {name!r}, which exists; ignored",
                              FulmenPluginWarning, stacklevel=2)
                return
            configure(sub.add_parser(name, help=help, description=help))

        try:
            impl.function(*[register for _ in impl.argnames])
        except Exception as exc:
            warnings.warn(f"plugin {impl.plugin_name!r} failed to add its commands: {exc}", FulmenPluginWarning, stacklevel=2)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in STAGE_COMMANDS:
        # Handed over before argparse and before plugin discovery: the training commands
        # have their own typed parser, and `fulmen fit --help` must not load every plugin.
        from fulmen.cli.subcommands import run_stage_command

        return run_stage_command(argv)
    parser = argparse.ArgumentParser(prog="fulmen", description="fulmen training framework tools")
    sub = parser.add_subparsers(dest="command")
    for stage, text in STAGE_COMMANDS.items():
        sub.add_parser(stage, help=text, add_help=False)  # listed here, parsed by fulmen.cli.subcommands
    plugins = sub.add_parser("plugins", help="list discovered plugins, what they register and their status")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--check", action="store_true",
                         help="validate the installed plugins against the configuration (fulmen.toml, "
                              "[tool.fulmen], FULMEN_* variables); exit 1 on problems")
    plugins.set_defaults(func=cmd_plugins)
    from fulmen.migrate import command as migrate_command  # light: libcst loads only when it runs

    migrate_command.configure(sub.add_parser(
        "migrate", help="rewrite Lightning imports and names to fulmen's (--diff to preview)",
        description="Rewrite a Lightning program's imports and names to fulmen's, in place; "
                    "report the names that need a human."))
    _add_plugin_commands(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)
