"""WandbLogger in offline mode, every wandb folder under the test's tmp dir, read back from
the run's ``.wandb`` transaction log with the wandb CLI (``wandb leet inspect --json``):
config, every history row, summary, exit code and model artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("wandb")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402
from logger_helpers import RecordingLogger, wandb_history, wandb_records, wandb_run_dirs, wandb_summary  # noqa: E402

import fulmen  # noqa: E402
from fulmen_loggers import WandbLogger  # noqa: E402

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


def rows_by_step(history):
    out = {}
    for row in history:
        out.setdefault(row["_step"], {}).update(row)
    return out


def test_offline_run_holds_config_every_row_summary_and_checkpoints(wandb_env, tmp_path):
    logger = WandbLogger(project="fulmen-test", name="boring", save_dir=tmp_path, log_model="all", tags=["ci"], **FAST)
    reference = RecordingLogger()
    checkpoint = fulmen.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=1)
    trainer = quiet_trainer(
        tmp_path, logger=[logger, reference], max_epochs=2, log_every_n_steps=1, callbacks=[checkpoint]
    )
    trainer.fit(BoringModule(), loader(), loader())
    assert logger.remaining == 0

    [run_dir] = wandb_run_dirs(wandb_env, logger.version)  # under WANDB_DIR, not the cwd
    records = wandb_records(run_dir)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_id"] == logger.version and run["project"] == "fulmen-test" and run["display_name"] == "boring"
    summary = wandb_summary(run_dir)
    assert {k: v for k, v in summary["config"].items() if not k.startswith("_")} == {"features": 8, "lr": 0.05}
    assert summary["exit_code"] == 0 and summary["state"] == "finished" and summary["tags"] == ["ci"]

    rows = rows_by_step(wandb_history(records))
    assert sorted(rows) == list(range(1, 17))  # one row per global step, none missing
    for step, metrics in reference.calls:
        for key, value in metrics.items():
            assert rows[step][key] == pytest.approx(value, rel=1e-6), (step, key)
    assert summary["summary"]["train_loss"] == pytest.approx(reference.values("train_loss")[-1][1], rel=1e-6)
    assert summary["summary"]["val_loss"] == pytest.approx(reference.values("val_loss")[-1][1], rel=1e-6)

    # log_model="all": one model-<id> artifact version per checkpoint written, with aliases.
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    written = [(Path(p).name, aliases) for p, aliases in reference.checkpoints]
    assert [a["name"] for a in artifacts] == [f"model-{logger.version}"] * len(written)
    assert [sorted(a["aliases"]) for a in artifacts] == [sorted(aliases) for _, aliases in written]
    assert [a["manifest"]["contents"][0]["path"] for a in artifacts] == [name for name, _ in written]
    assert not list((Path(logger.log_dir) / "fulmen-delivery" / "staged").rglob("*.ckpt"))  # links released


def test_by_name_with_wandb_environment_variables(wandb_env, tmp_path, clean_backend_env):
    clean_backend_env.setenv("WANDB_PROJECT", "from-env")
    clean_backend_env.setenv("WANDB_RUN_ID", "envrun01")
    trainer = quiet_trainer(tmp_path, logger="wandb", max_epochs=1, log_every_n_steps=4)
    logger = trainer.logger
    assert isinstance(logger, WandbLogger) and logger.version == "envrun01" and logger.project == "from-env"
    assert Path(logger.log_dir) == tmp_path / "wandb" / "from-env" / "envrun01"
    trainer.fit(BoringModule(), loader(), loader())
    [run_dir] = wandb_run_dirs(wandb_env, "envrun01")
    rows = rows_by_step(wandb_history(wandb_records(run_dir)))
    assert sorted(rows) == [4, 8] and "val_loss" in rows[8]


def test_records_wandb_still_held_in_memory_survive_sigkill_and_are_replayed(wandb_env, tmp_path):
    """wandb's service writes its log in 32 KiB blocks, so a killed process leaves its last
    rows only in fulmen's journal; ``fulmen loggers replay`` sends them to the same run id
    and ends it, skipping rows that did reach the log."""
    import json
    import os
    import subprocess
    import sys

    from fulmen_loggers.replay import replay

    script = Path(__file__).resolve().parent / "logger_train_script.py"
    root = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), "--root", str(root), "--loggers", "wandb", "--kill-at", "13"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    [delivery] = list(root.rglob("fulmen-delivery"))
    run_id = json.loads((delivery / "meta.json").read_text())["settings"]["id"]
    [first] = wandb_run_dirs(wandb_env, run_id)
    kept_by_wandb = [row["_step"] for row in wandb_history(wandb_records(first)) if "train_loss" in row]
    assert kept_by_wandb != list(range(1, 13))  # wandb itself lost the tail

    [result] = replay(root, timeout=60)
    assert result.status == "delivered" and result.remaining == 0
    run_dirs = wandb_run_dirs(wandb_env, run_id)
    assert len(run_dirs) == 2
    steps = [row["_step"] for d in run_dirs for row in wandb_history(wandb_records(d)) if "train_loss" in row]
    assert sorted(steps) == list(range(1, 13))
    assert wandb_summary(run_dirs[-1])["exit_code"] == 1  # ended by the replay, not by the dead process
