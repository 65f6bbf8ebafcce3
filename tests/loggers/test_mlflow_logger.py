"""MLflowLogger against a real ``mlflow server`` on 127.0.0.1 and a local ``sqlite:///`` store:
parameters, every step of every metric, tags, run status and checkpoint artifacts, read
back with ``MlflowClient``."""

from __future__ import annotations

import filecmp
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402
from logger_helpers import RecordingLogger, metric_steps  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import fulmen  # noqa: E402
from fulmen_loggers import MLflowLogger, TensorBoardLogger  # noqa: E402

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


def assert_same_history(client, run_id, reference: RecordingLogger):
    """Every (step, value) the Trainer logged is there, and no step more often than it was
    logged. (MLflow stores two identical points - same step, value and millisecond - once:
    the Trainer's ``epoch`` at a validation step can collapse that way.)"""
    for key in reference.keys():
        got = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        want = reference.values(key)
        assert {(s, round(v, 6)) for s, v in got} == {(s, round(v, 6)) for s, v in want}, key
        got_steps, want_steps = Counter(s for s, _ in got), Counter(s for s, _ in want)
        assert not got_steps - want_steps, (key, sorted((got_steps - want_steps).items())[:10])


def test_fit_logs_params_metrics_tags_and_every_checkpoint(mlflow_server, tmp_path):
    logger = MLflowLogger(
        experiment_name="fit",
        run_name="boring",
        tracking_uri=mlflow_server.uri,
        tags={"team": "vision"},
        save_dir=tmp_path,
        log_model="all",
        **FAST,
    )
    reference = RecordingLogger()
    checkpoint = fulmen.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=1)
    trainer = quiet_trainer(
        tmp_path, logger=[logger, reference], max_epochs=3, log_every_n_steps=1, callbacks=[checkpoint]
    )
    trainer.fit(BoringModule(), loader(), loader())
    assert logger.remaining == 0 and logger.run_id

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "boring"
    assert client.get_experiment(run.info.experiment_id).name == "fit"
    assert run.data.params == {"features": "8", "lr": "0.05"}
    assert run.data.tags["team"] == "vision"
    assert "mlflow.source.name" in run.data.tags  # MLflow's own context tags are added
    assert set(reference.keys()) == {"train_loss", "val_loss", "epoch"}
    assert_same_history(client, logger.run_id, reference)
    assert metric_steps(client, logger.run_id, "train_loss") == list(range(1, 25))

    # log_model="all": each file ModelCheckpoint wrote, even those top-1 pruned later.
    written = [Path(p).name for p, _ in reference.checkpoints]
    uploaded = sorted(Path(a.path).name for a in client.list_artifacts(logger.run_id, "checkpoints"))
    assert uploaded == sorted(written) and len(written) >= 2
    best = Path(checkpoint.best_model_path)
    assert run.data.tags["fulmen.best_checkpoint"] == f"checkpoints/{best.name}"
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        run_id=logger.run_id,
        artifact_path=f"checkpoints/{best.name}",
        dst_path=str(tmp_path / "download"),
        tracking_uri=mlflow_server.uri,
    )
    assert filecmp.cmp(local, best, shallow=False)
    # The checkpoints live in the logger's run directory, beside its spool.
    assert best.parent == Path(logger.log_dir) / "checkpoints"
    assert (Path(logger.log_dir) / "fulmen-delivery" / "meta.json").is_file()


def test_log_model_best_uploads_only_the_best_checkpoint_at_the_end(mlflow_server, tmp_path):
    logger = MLflowLogger(
        experiment_name="best", tracking_uri=mlflow_server.uri, save_dir=tmp_path, log_model=True, **FAST
    )
    checkpoint = fulmen.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=3, callbacks=[checkpoint])
    trainer.fit(BoringModule(), loader(), loader())
    client = MlflowClient(mlflow_server.uri)
    uploaded = [Path(a.path).name for a in client.list_artifacts(logger.run_id, "checkpoints")]
    assert uploaded == [Path(checkpoint.best_model_path).name]


def test_off_uploads_nothing_and_a_second_fit_continues_the_same_run(mlflow_server, tmp_path):
    logger = MLflowLogger(experiment_name="twice", tracking_uri=mlflow_server.uri, save_dir=tmp_path, **FAST)
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=2)
    trainer.fit(BoringModule(), loader(), loader())
    run_id = logger.run_id
    trainer.test(dataloaders=loader())  # after finalize: logging starts again, same run
    logger.finalize("success")
    client = MlflowClient(mlflow_server.uri)
    assert logger.run_id == run_id
    assert client.list_artifacts(run_id, "checkpoints") == []
    assert metric_steps(client, run_id, "train_loss") == [2, 4, 6, 8]
    assert metric_steps(client, run_id, "test_loss") == [8]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_by_name_from_environment_variables_with_a_local_sqlite_store(clean_backend_env, tmp_path):
    """``Trainer(logger=["mlflow", "tensorboard"])``: settings from MLFLOW_* variables, the
    default store ``sqlite:///<default_root_dir>/mlflow.db``, two loggers at once."""
    clean_backend_env.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    trainer = quiet_trainer(tmp_path, logger=["mlflow", "tensorboard"], max_epochs=1, log_every_n_steps=1)
    mlflow_logger, tb_logger = trainer.loggers
    assert isinstance(mlflow_logger, MLflowLogger) and isinstance(tb_logger, TensorBoardLogger)
    assert mlflow_logger.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    trainer.fit(BoringModule(), loader(), loader())
    client = MlflowClient(mlflow_logger.tracking_uri)
    run = client.get_run(mlflow_logger.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "from-env"
    assert metric_steps(client, run.info.run_id, "train_loss") == list(range(1, 9))
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith(
        (tmp_path / "mlartifacts").as_uri()
    )
    assert Path(mlflow_logger.log_dir) == tmp_path / "mlflow" / "from-env" / "version_0"
