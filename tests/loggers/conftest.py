"""Fixtures of the logger tests. The backends are heavy and optional: each test module that
needs one starts with ``pytest.importorskip``, so the default ``tests`` session skips them
cleanly and ``nox -s loggers`` (which installs ``fulmen-loggers[all]``) runs them."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # ``import logger_helpers``

BACKEND_ENV_PREFIXES = ("MLFLOW_", "WANDB_")


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
