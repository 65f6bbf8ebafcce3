"""Fixtures of the logger tests. The backends are heavy and optional: each test module that
needs one starts with ``pytest.importorskip``, so the default ``tests`` session skips them
cleanly and ``nox -s loggers`` (which installs ``fulmen-loggers[all]``) runs them."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # ``import logger_helpers``

BACKEND_ENV_PREFIXES = ("MLFLOW_", "WANDB_", "CLEARML_", "TRAINS_", "COMET_")


@pytest.fixture(autouse=True)
def clean_backend_env(monkeypatch, tmp_path):
    """No tracking settings leak in from the developer's shell; nothing lands outside tmp_path."""
    for var in list(os.environ):
        if var.startswith(BACKEND_ENV_PREFIXES):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return monkeypatch


@pytest.fixture
def wandb_env(clean_backend_env, tmp_path):
    """W&B offline, every wandb folder under the test's tmp dir."""
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        path = tmp_path / var.lower()
        path.mkdir()
        clean_backend_env.setenv(var, str(path))
    clean_backend_env.setenv("WANDB_MODE", "offline")
    clean_backend_env.setenv("WANDB_SILENT", "true")
    clean_backend_env.setenv("WANDB_CONSOLE", "off")
    return tmp_path / "wandb_dir"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` shared by the tests that only read and write (about 10 s to
    start); the outage tests start their own."""
    pytest.importorskip("mlflow")
    from logger_helpers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server")).start()
    yield server
    server.stop()


# ClearML's reporter writes through a subprocess by default, and closing a task then waits
# about ten seconds for it; the thread writes the same offline files and closes at once.
CLEARML_TEST_CONFIG = "sdk {\n  development {\n    report_use_subprocess: false\n  }\n}\n"


@pytest.fixture
def clearml_env(clean_backend_env, tmp_path):
    """ClearML offline, its cache (where offline sessions go) and config under the test's tmp dir."""
    pytest.importorskip("clearml")
    config = tmp_path / "clearml.conf"
    config.write_text(CLEARML_TEST_CONFIG)
    clean_backend_env.setenv("CLEARML_CONFIG_FILE", str(config))
    clean_backend_env.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml_cache"))
    clean_backend_env.setenv("CLEARML_OFFLINE_MODE", "1")
    clean_backend_env.setenv("HOME", str(tmp_path / "home"))  # ClearML writes ~/.clearml/.session.json
    return tmp_path / "clearml_cache"


@pytest.fixture
def comet_env(clean_backend_env, tmp_path):
    """Comet offline, its archives and config under the test's tmp dir, no API key."""
    pytest.importorskip("comet_ml")
    clean_backend_env.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "comet_offline"))
    clean_backend_env.setenv("COMET_CONFIG", str(tmp_path / "comet.config"))
    clean_backend_env.setenv("COMET_START_ONLINE", "false")  # Trainer(logger="comet") goes offline too
    clean_backend_env.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    clean_backend_env.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "comet_offline"


@pytest.fixture
def fit_beside_reference(tmp_path):
    """The tracking loggers' main test run: 2 epochs of the boring module with the logger under
    test and a ``RecordingLogger`` beside it (what the backend must hold), every step logged,
    and a ``ModelCheckpoint`` keeping the best by ``val_loss``. Returns the reference logger."""
    import fulmen
    from helpers import BoringModule, loader, quiet_trainer
    from logger_helpers import RecordingLogger

    def fit(logger):
        reference = RecordingLogger()
        checkpoint = fulmen.callbacks.ModelCheckpoint(monitor="val_loss", save_top_k=1)
        trainer = quiet_trainer(tmp_path, logger=[logger, reference], max_epochs=2, log_every_n_steps=1,
                                callbacks=[checkpoint])
        trainer.fit(BoringModule(), loader(), loader())
        return reference

    return fit
