"""ClearML and Comet, offline, in a run that is killed (SIGKILL) after logging past its last
checkpoint and then resumed from it: the resumed process continues the same ClearML task and
the same Comet experiment key, and together the processes hold every step once, read back
from ClearML's offline ``metrics.jsonl`` and Comet's archives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("clearml", "comet_ml"):
    pytest.importorskip(_module)

from fulmen_loggers.clearml_logger import read_offline_scalars  # noqa: E402
from fulmen_loggers.comet_logger import offline_archives, read_offline_metrics  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "logger_train_script.py"


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def test_killed_and_resumed_run_continues_the_task_and_the_experiment(clearml_env, comet_env, tmp_path):
    # ClearML's reporter runs in a thread here (conftest's clearml.conf): with its default
    # subprocess, that subprocess outlives the SIGKILLed parent for a while, holding its pipes.
    root = tmp_path / "run"
    common = ["--root", root, "--loggers", "clearml,comet"]
    first = run_script(*common, "--kill-at", 13, "--wait", 3, "--wait-open")
    assert first.returncode == -9, first.stderr[-4000:]
    second = run_script(*common, "--ckpt", root / "ckpts" / "last.ckpt")
    assert second.returncode == 0, second.stderr[-4000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 20
    clearml_state, comet_state = summary["loggers"]
    assert clearml_state["remaining"] == 0 and comet_state["remaining"] == 0

    # ClearML: one task, continued; its one metrics file holds each step once.
    offline = clearml_env / "offline"
    assert [p.name for p in offline.iterdir() if p.is_dir()] == [clearml_state["identity"]["task_id"]]
    scalars = read_offline_scalars(offline / clearml_state["identity"]["task_id"])
    assert sorted(s for name, s, _ in scalars if name == "train_loss") == list(range(1, 21))
    assert sorted(s for name, s, _ in scalars if name == "val_loss") == [8, 16]

    # Comet: the killed process never wrote its archive; the resumed one, under the same key,
    # holds the steps the dead one logged (from fulmen's journal) and its own, each once.
    key = comet_state["version"]
    assert comet_state["identity"]["experiment_key"] == key
    assert len(offline_archives(comet_env, key)) == 1
    steps = sorted(s for name, s, _, _ in read_offline_metrics(comet_env, key) if name == "train_loss")
    assert steps == list(range(1, 21))
