"""MLflow, W&B and TensorBoard at once in a run that is killed (SIGKILL) after logging past
its last checkpoint and then resumed from it: each backend continues the same run (MLflow
run id, W&B run id, TensorBoard version folder) and holds every step once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("mlflow", "wandb", "tensorboard"):
    pytest.importorskip(_module)

from logger_helpers import metric_steps, tb_scalars, wandb_history, wandb_records, wandb_run_dirs  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "logger_train_script.py"


def run_script(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def test_killed_and_resumed_run_continues_every_backend_without_gaps_or_doubles(mlflow_server, wandb_env, tmp_path):
    root = tmp_path / "run"
    common = ["--root", root, "--loggers", "mlflow,wandb,tensorboard", "--mlflow-uri", mlflow_server.uri]
    first = run_script(*common, "--kill-at", 13)
    assert first.returncode == -9, first.stderr[-4000:]
    second = run_script(*common, "--ckpt", root / "ckpts" / "last.ckpt")
    assert second.returncode == 0, second.stderr[-4000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 20
    mlflow_state, wandb_state, tb_state = summary["loggers"]
    assert all(state["remaining"] == 0 for state in summary["loggers"])

    # MLflow: one run (the first process created it; the resumed one found it in the checkpoint).
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    run_id = mlflow_state["identity"]["run_id"]
    assert [r.info.run_id for r in runs if Path(r.info.artifact_uri).name] and run_id in {r.info.run_id for r in runs}
    assert metric_steps(client, run_id, "train_loss") == list(range(1, 21))
    assert metric_steps(client, run_id, "val_loss") == [8, 16]
    assert client.get_run(run_id).info.status == "FINISHED"

    # W&B offline: two run folders with the same id (one per process); together every step once.
    run_dirs = wandb_run_dirs(wandb_env, wandb_state["version"])
    assert len(run_dirs) == 2
    steps = [row["_step"] for d in run_dirs for row in wandb_history(wandb_records(d)) if "train_loss" in row]
    assert sorted(steps) == list(range(1, 21))

    # TensorBoard: same version folder; the resumed writer's purge_step hides what the dead
    # process wrote after the checkpoint, the resumed run's values take their place.
    assert tb_state["log_dir"] == str(root / "fulmen_logs" / "version_0")
    assert len(list(Path(tb_state["log_dir"]).glob("events.out.tfevents.*"))) == 2
    scalars = tb_scalars(Path(tb_state["log_dir"]))
    assert [s for s, _ in scalars["train_loss"]] == list(range(1, 21))
    assert [s for s, _ in scalars["val_loss"]] == [8, 16]
