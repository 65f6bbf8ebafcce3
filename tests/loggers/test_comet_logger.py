"""CometLogger against the real ``comet_ml`` library offline (``online=False``), its archives
and config under the test's tmp dir, read back from the archive Comet wrote (a zip of
``experiment.json`` and one JSON message a line): every step once, parameters, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("comet_ml")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402

from fulmen_loggers import CometLogger  # noqa: E402
from fulmen_loggers.comet_logger import offline_archives, read_archive, read_offline_metrics  # noqa: E402

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


def series(directory, key):
    out = {}
    for name, step, value, _ in read_offline_metrics(directory, key):
        out.setdefault(name, []).append((step, value))
    return out


def test_offline_archive_holds_every_step_once_parameters_and_checkpoints(comet_env, tmp_path, fit_beside_reference):
    offline = tmp_path / "archives"
    logger = CometLogger(project="fulmen-test", online=False, save_dir=tmp_path, log_model="all",
                         offline_directory=str(offline), name="boring", tags=["ci"], log_code=False,
                         log_git_metadata=False, log_git_patch=False, **FAST)
    reference = fit_beside_reference(logger)
    assert logger.remaining == 0
    assert Path(logger.log_dir) == tmp_path / "comet" / "fulmen-test" / logger.version
    assert logger.identity["experiment_key"] == logger.version and logger.identity["offline"] is True

    [archive] = offline_archives(offline, logger.version)
    experiment, messages = read_archive(archive)
    assert experiment["offline_id"] == logger.version and experiment["project_name"] == "fulmen-test"
    assert experiment["tags"] == ["ci"] and experiment["resume_strategy"] == "get_or_create"
    stored = series(offline, logger.version)
    assert [s for s, _ in stored["train_loss"]] == list(range(1, 17))  # every step, once
    for key in ("train_loss", "val_loss"):
        assert stored[key] == [(s, pytest.approx(v, rel=1e-6)) for s, v in reference.values(key)]

    params = {m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
              for m in messages if m["type"] == "parameter_msg" and m["payload"]["param"]["source"] == "manual"}
    assert params == {"features": 8, "lr": 0.05}
    others = {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}
    assert others["fulmen_status"] == "success"

    # log_model="all": one model file per checkpoint written, its bytes inside the archive.
    uploads = [m["payload"] for m in messages if m["type"] == "file_upload"
               and m["payload"]["upload_type"] == "model-element"]
    written = [(Path(p).name, aliases) for p, aliases in reference.checkpoints]
    assert [(u["additional_params"]["fileName"], u["metadata"]["aliases"]) for u in uploads] == written
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        sizes = {info.filename: info.file_size for info in zf.infolist()}
    assert all(sizes[u["file_path"]] > 1000 for u in uploads)  # the checkpoint's bytes, not a stub
    assert not list((Path(logger.log_dir) / "fulmen-delivery" / "staged").rglob("*.ckpt"))  # links released


def test_by_name_offline_writes_its_archive_into_the_run_directory(comet_env, tmp_path, clean_backend_env):
    clean_backend_env.delenv("COMET_OFFLINE_DIRECTORY")
    clean_backend_env.setenv("COMET_PROJECT_NAME", "from-env")
    trainer = quiet_trainer(tmp_path, logger="comet", max_epochs=1, log_every_n_steps=4)
    logger = trainer.logger
    assert isinstance(logger, CometLogger) and logger.name == "from-env"
    trainer.fit(BoringModule(), loader(), loader())
    assert [a.parent for a in offline_archives(logger.log_dir, logger.version)] == [Path(logger.log_dir)]
    stored = series(logger.log_dir, logger.version)
    assert [s for s, _ in stored["train_loss"]] == [4, 8] and [s for s, _ in stored["val_loss"]] == [8]


def test_bad_mode_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="mode='sometimes'.*get_or_create"):
        CometLogger(save_dir=tmp_path, mode="sometimes")


def test_the_api_key_reaches_comet_without_outliving_the_logger_in_module_state(comet_env, tmp_path):
    """The key is handed to the sink object, not kept in a module-level table where every
    logger's secret would stay for the life of the process; nor is it written to meta.json."""
    import fulmen_loggers.comet_logger as comet_module

    secret = "fulmen0test0api0key0abcdef0123456789"
    logger = CometLogger(api_key=secret, project="fulmen-test", online=False, save_dir=tmp_path,
                         log_code=False, log_git_metadata=False, log_git_patch=False, **FAST)
    logger.log_metrics({"loss": 1.0}, step=1)
    assert logger.wait_delivered(timeout=60)
    assert logger.dispatcher._sink.api_key == secret  # what the sink passes to comet_ml.start
    logger.finalize("success")
    assert logger.remaining == 0 and logger.dispatcher is None

    def holds(value, depth=0):
        if isinstance(value, str):
            return secret in value
        if depth < 3 and isinstance(value, dict):
            return any(holds(k, depth + 1) or holds(v, depth + 1) for k, v in value.items())
        if depth < 3 and isinstance(value, (list, tuple, set)):
            return any(holds(v, depth + 1) for v in value)
        return False

    assert not [name for name, value in vars(comet_module).items() if holds(value)]
    delivery = Path(logger.log_dir) / "fulmen-delivery"
    assert not [p for p in delivery.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
