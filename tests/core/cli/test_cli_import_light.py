"""``import fulmen``, ``import fulmen.cli`` and ``fulmen plugins`` never import jsonargparse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_helpers import HERE

PROBE = """
import json, sys
import fulmen, fulmen.cli
from fulmen.cli import main
before = "jsonargparse" in sys.modules
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["plugins"])
print(json.dumps({"after_import": before, "after_plugins": "jsonargparse" in sys.modules, "code": code}))
"""


def test_jsonargparse_loads_only_for_the_training_commands():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"after_import": False, "after_plugins": False, "code": 0}


def test_cli_is_importable_where_migrate_maps_lightningcli():
    pytest.importorskip("libcst", reason='fulmen migrate needs libcst (pip install "fulmen[migrate]")')
    from fulmen.cli import CLI
    from fulmen.migrate.rewriter import _importable

    assert CLI.__module__ == "fulmen.cli.lightning_style" and _importable("fulmen.cli", "CLI")


HELP_PROBE = """
import contextlib, io, json, sys
from fulmen.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["fit", "--help"])
plugins = sorted(m for m in sys.modules if m.split(".")[0].startswith("fulmen_") or m.split(".")[0] in ("deepspeed", "mlflow", "wandb"))
print(json.dumps({"code": code, "plugins": plugins, "lists_trainer": "--trainer.max_epochs" in out.getvalue()}))
"""


def test_fit_help_loads_no_plugin():
    """``fulmen fit --help`` builds the parser from signatures; plugin packages load only
    when a registered name has to be checked, after parsing."""
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"code": 0, "plugins": [], "lists_trainer": True}
