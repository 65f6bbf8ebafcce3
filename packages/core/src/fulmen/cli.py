"""``fulmen`` command line: ``fulmen plugins [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from fulmen.plugins import discovery


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
    rows.append(builtin)
    for record in plugin_set.records:
        row = record.as_dict()
        if record.name in plugin_set.disabled:
            row["status"] = discovery.DISABLED
            row["reason"] = plugin_set.disabled[record.name]
        rows.append(row)
    return rows


def _print_table(rows) -> None:
    for row in rows:
        head = f"{row['name']}  ({row['distribution'] or '?'} {row['version'] or ''})".rstrip()
        status = row["status"]
        print(f"{head}: {status}" + (f" - {row['reason']}" if row["reason"] else ""))
        if row.get("requirement"):
            print(f"    requires {row['requirement']}")
        for kind, names in sorted(row["registers"].items()):
            print(f"    {kind}: {', '.join(names)}")


def cmd_plugins(args) -> int:
    rows = _plugin_rows()
    if args.json:
        json.dump({"fulmen_version": discovery.fulmen_version(), "plugins": rows}, sys.stdout, indent=2)
        print()
    else:
        _print_table(rows)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fulmen", description="fulmen training framework tools")
    sub = parser.add_subparsers(dest="command")
    plugins = sub.add_parser("plugins", help="list discovered plugins, what they register and their status")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=cmd_plugins)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)
