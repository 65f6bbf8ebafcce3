"""``fulmen fit|validate|test|predict``: the CLI without a script, for a Module and a
DataModule that live in an importable package (``--model pkg.MyModule --data pkg.MyData``,
or ``model: {class_path: ...}`` in ``--config run.yaml``)."""

from __future__ import annotations

import sys
from typing import List


def run_stage_command(argv: List[str]) -> int:
    try:
        import jsonargparse  # noqa: F401
    except ImportError:
        print(f"fulmen {argv[0]}: needs jsonargparse; install it with: pip install 'fulmen[cli]'", file=sys.stderr)
        return 2
    from fulmen.cli.lightning_style import CLI

    try:
        CLI(args=argv, parser_kwargs={"prog": "fulmen"})
    except SystemExit as exc:  # --help, --print_config and reported mistakes
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0
