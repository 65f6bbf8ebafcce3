"""``fulmen plugins``: what it lists, as text and as JSON, and that the command is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from plugin_helpers import run_python, subprocess_env

from fulmen.cli import main as fulmen_cli

# entry-point name → distribution of the four official plugin packages
OFFICIAL = {
    "fsdp": "fulmen-strategy-fsdp",
    "deepspeed": "fulmen-strategy-deepspeed",
    "xla": "fulmen-accelerator-xla",
    "loggers": "fulmen-loggers",
}
OFFICIAL_TARGETS = {
    "fsdp": "fulmen_fsdp.plugin",
    "deepspeed": "fulmen_deepspeed.plugin",
    "xla": "fulmen_xla.plugin",
    "loggers": "fulmen_loggers.plugin",
}
# What the core registers through its own hooks. Other names may be added over time, so
# these are checked as subsets.
BUILTINS = {
    "accelerator": {"cpu", "cuda", "mps"},
    "strategy": {"single_device", "ddp", "ddp_spawn", "ddp_fork"},
    "precision": {"32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"},
    "logger": {"csv"},
    "callback": {"model_checkpoint", "early_stopping", "lr_monitor", "progress_bar", "model_summary", "timer"},
    "environment": {"local", "torchelastic", "slurm", "lsf", "mpi"},
    "checkpoint_io": {"torch", "async"},
}


def _text_blocks(out: str):
    """``fulmen plugins`` text → {header line: [indented lines]}."""
    blocks, current = {}, None
    for line in out.splitlines():
        if line.startswith("    "):
            blocks[current].append(line.strip())
        elif line.strip():
            current = line
            blocks[current] = []
    return blocks


def _check_json(payload):
    assert payload["fulmen_version"] == metadata.version("fulmen")
    rows = {row["name"]: row for row in payload["plugins"]}
    core = rows["fulmen"]
    assert core["status"] == "loaded"
    assert core["distribution"] == "fulmen" and core["version"] == metadata.version("fulmen")
    assert core["target"] == "fulmen.builtins"
    for kind, names in BUILTINS.items():
        assert names <= set(core["registers"][kind]), kind
    for name, dist in OFFICIAL.items():
        row = rows[name]
        assert row["distribution"] == dist
        assert row["version"] == metadata.version(dist)
        assert row["target"] == OFFICIAL_TARGETS[name]
        assert row["status"] == "loaded", row
        assert row["reason"] == ""
        assert row["requirement"].startswith("fulmen")
        assert set(row["registers"]) <= {"strategy", "accelerator", "precision", "logger", "callback",
                                         "environment", "checkpoint_io"}
    # The built-ins come first, then the entry points.
    assert payload["plugins"][0]["name"] == "fulmen"
    return rows


def test_text_listing_shows_builtins_and_official_packages(clean_plugin_env, capsys):
    assert fulmen_cli(["plugins"]) == 0
    blocks = _text_blocks(capsys.readouterr().out)
    version = metadata.version("fulmen")
    core = blocks[f"fulmen  (fulmen {version}): loaded"]
    listed = dict(line.split(": ", 1) for line in core)
    for kind, names in BUILTINS.items():
        assert names <= set(listed[kind].split(", ")), kind
    for name, dist in OFFICIAL.items():
        header = f"{name}  ({dist} {metadata.version(dist)}): loaded"
        assert header in blocks, list(blocks)
        declared = next(Requirement(r) for r in metadata.requires(dist) if Requirement(r).name == "fulmen")
        assert f"requires fulmen{declared.specifier}" in blocks[header], blocks[header]


def test_json_listing_in_process(clean_plugin_env, capsys):
    assert fulmen_cli(["plugins", "--json"]) == 0
    _check_json(json.loads(capsys.readouterr().out))


def test_console_script_is_installed_and_prints_json():
    script = Path(sys.executable).parent / ("fulmen.exe" if os.name == "nt" else "fulmen")
    assert script.is_file(), f"no console script at {script}"
    assert os.access(script, os.X_OK)
    proc = subprocess.run([str(script), "plugins", "--json"], env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_json(json.loads(proc.stdout))


def test_python_dash_m_fulmen_plugins_text():
    proc = run_python(["-m", "fulmen", "plugins"])
    assert proc.stdout.startswith(f"fulmen  (fulmen {metadata.version('fulmen')}): loaded")
    for name, dist in OFFICIAL.items():
        assert f"{name}  ({dist} {metadata.version(dist)}): loaded" in proc.stdout
    assert __import__("re").search(r"strategy: .*\bsingle_device\b", proc.stdout)
    assert proc.stderr == ""  # nothing broke, so nothing was warned


@pytest.mark.parametrize("argv", [[], ["--help"]])
def test_cli_without_a_command_prints_help(argv, capsys):
    if argv:
        with pytest.raises(SystemExit) as exc:
            fulmen_cli(argv)
        assert exc.value.code == 0
    else:
        assert fulmen_cli(argv) == 2
    assert "plugins" in capsys.readouterr().out
