"""fulmen's logger conformance suite (``fulmen.testing``) on fulmen-loggers' backends, read
back through each backend's own reader: TensorBoard event files, the MLflow store, and the
offline files ClearML and Comet write.

Like the other logger tests, each backend is skipped when its library is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fulmen.testing import LoggerConformance


class TestTensorBoardLoggerConformance(LoggerConformance):
    logger = "tensorboard"

    @pytest.fixture(autouse=True)
    def _backend(self):
        pytest.importorskip("tensorboard")

    def read_metrics(self, logger):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        stored = {}
        for events in sorted({p.parent for p in Path(logger.log_dir).rglob("events.out.tfevents.*")}):
            accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                for event in accumulator.Scalars(tag):
                    stored.setdefault(event.step, {})[tag] = event.value
        return stored


class TestMLflowLoggerConformance(LoggerConformance):
    logger = "mlflow"

    @pytest.fixture(scope="class")
    def store(self, tmp_path_factory):
        pytest.importorskip("mlflow")
        return tmp_path_factory.mktemp("mlflow") / "mlflow.db"

    @pytest.fixture(autouse=True)
    def _backend(self, store, clean_backend_env):
        # One local sqlite store for the class: creating one costs seconds of migrations.
        clean_backend_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")

    def read_metrics(self, logger):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=logger.tracking_uri)
        stored = {}
        for key in client.get_run(logger.run_id).data.metrics:
            for metric in client.get_metric_history(logger.run_id, key):
                stored.setdefault(metric.step, {})[key] = metric.value
        return stored


class TestClearMLLoggerConformance(LoggerConformance):
    logger = "clearml"

    @pytest.fixture(autouse=True)
    def _backend(self, clearml_env):
        pass  # offline, cache and config under tmp_path (conftest)

    def read_metrics(self, logger):
        from fulmen_loggers.clearml_logger import read_offline_scalars

        stored = {}
        for name, step, value in read_offline_scalars(Path(logger.identity["offline_folder"])):
            stored.setdefault(step, {})[name] = value
        return stored


class TestCometLoggerConformance(LoggerConformance):
    logger = "comet"

    @pytest.fixture(autouse=True)
    def _backend(self, comet_env):
        pass  # offline, archives and config under tmp_path (conftest)

    def read_metrics(self, logger):
        from fulmen_loggers.comet_logger import read_offline_metrics

        stored = {}
        for name, step, value, _ in read_offline_metrics(Path(logger.offline_directory), logger.version):
            stored.setdefault(step, {})[name] = value
        return stored
