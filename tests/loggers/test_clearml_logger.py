"""ClearMLLogger against the real ``clearml`` library in offline mode, its cache and config
under the test's tmp dir, read back from the offline session ClearML wrote (``metrics.jsonl``,
``task.json``, the artifact files): every step once, hyperparameters, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("clearml")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402

from fulmen_loggers import ClearMLLogger  # noqa: E402
from fulmen_loggers.clearml_logger import join_name, read_offline_scalars, split_name  # noqa: E402

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


def by_step(scalars):
    out = {}
    for name, step, value in scalars:
        out.setdefault(name, []).append((step, value))
    return out


def test_metric_names_map_to_title_and_series_and_back():
    assert split_name("train/loss") == ("train", "loss") and join_name("train", "loss") == "train/loss"
    assert split_name("val_loss") == ("val_loss", "val_loss") and join_name("val_loss", "val_loss") == "val_loss"
    assert split_name("a/b/c") == ("a/b", "c") and split_name("/x") == ("/x", "/x")


def test_offline_task_holds_every_step_once_hyperparameters_and_checkpoints(clearml_env, tmp_path,
                                                                         fit_beside_reference):
    logger = ClearMLLogger(project_name="fulmen-test", task_name="boring", tags=["ci"], save_dir=tmp_path,
                           log_model="all", **FAST)
    reference = fit_beside_reference(logger)
    assert logger.remaining == 0
    assert Path(logger.log_dir) == tmp_path / "clearml" / "fulmen-test" / "version_0"

    folder = Path(logger.identity["offline_folder"])
    assert folder.parent == clearml_env / "offline" and folder.name == logger.task_id  # under the tmp cache
    series = by_step(read_offline_scalars(folder))
    assert [s for s, _ in series["train_loss"]] == list(range(1, 17))  # every step, once
    for key in ("train_loss", "val_loss"):
        assert series[key] == [(s, pytest.approx(v, rel=1e-6)) for s, v in reference.values(key)]

    task = json.loads((folder / "task.json").read_text())
    assert task["project_name"] == "fulmen-test" and task["name"] == "boring"
    params = {k: v["value"] for k, v in task["hyperparams"]["General"].items()}
    assert params == {"features": "8", "lr": "0.05"}

    # log_model="all": one artifact per checkpoint written, the file itself in the session.
    artifacts = task["execution"]["artifacts"]
    written = [Path(p).name for p, _ in reference.checkpoints]
    assert [a["key"] for a in artifacts] == written
    for artifact in artifacts:
        stored = Path(artifact["uri"])
        assert stored.is_file() and stored.is_relative_to(folder) and stored.stat().st_size > 0
        assert dict(artifact["display_data"])["aliases"] == str(["latest", "best"])
    assert not list((Path(logger.log_dir) / "fulmen-delivery" / "staged").rglob("*.ckpt"))  # links released
    assert (folder.parent / f"{folder.name}.zip").is_file()  # the session ClearML uploads later


def test_by_name_offline_from_the_environment(clearml_env, tmp_path, clean_backend_env):
    clean_backend_env.setenv("CLEARML_PROJECT", "from-env")
    trainer = quiet_trainer(tmp_path, logger="clearml", max_epochs=1, log_every_n_steps=4)
    logger = trainer.logger
    assert isinstance(logger, ClearMLLogger) and logger.name == "from-env"
    trainer.fit(BoringModule(), loader(), loader())
    series = by_step(read_offline_scalars(Path(logger.identity["offline_folder"])))
    assert [s for s, _ in series["train_loss"]] == [4, 8] and [s for s, _ in series["val_loss"]] == [8]
