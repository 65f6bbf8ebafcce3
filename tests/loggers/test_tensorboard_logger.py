"""TensorBoardLogger: event files read back with TensorBoard's own EventAccumulator
(``size_guidance={"scalars": 0}`` keeps every point): every step of every metric, the
hyperparameters with the run's metric names, the model graph."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

import torch  # noqa: E402
from helpers import BoringModule, loader, quiet_trainer  # noqa: E402
from logger_helpers import RecordingLogger, tb_scalars  # noqa: E402

from fulmen_loggers import TensorBoardLogger  # noqa: E402

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


class GraphModule(BoringModule):
    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = torch.zeros(2, 8)


def hparams_plugin(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    return {tag: HParamsPluginData.FromString(data) for tag, data in content.items()}, acc


def test_every_step_hyperparameters_and_graph(tmp_path):
    logger = TensorBoardLogger(save_dir=tmp_path, log_graph=True, **FAST)
    reference = RecordingLogger()
    trainer = quiet_trainer(tmp_path, logger=[logger, reference], max_epochs=3, log_every_n_steps=1)
    trainer.fit(GraphModule(), loader(), loader())
    assert logger.remaining == 0
    assert Path(logger.log_dir) == tmp_path / "fulmen_logs" / "version_0"

    scalars = tb_scalars(logger.log_dir)
    # Lightning's default_hp_metric: a placeholder -1 at step 0, logged with the hyperparameters
    assert scalars.pop("hp_metric") == [(0, -1.0)]
    assert set(scalars) == set(reference.keys()) == {"train_loss", "val_loss", "epoch"}
    for key in ("train_loss", "val_loss"):
        assert [s for s, _ in scalars[key]] == reference.steps(key)
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in reference.values(key)], rel=1e-6)
    assert [s for s, _ in scalars["train_loss"]] == list(range(1, 25))

    plugin, acc = hparams_plugin(logger.log_dir)
    start = plugin["_hparams_/session_start_info"].session_start_info
    assert {k: v.number_value for k, v in start.hparams.items()} == {"features": 8.0, "lr": 0.05}
    experiment = plugin["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"train_loss", "val_loss", "epoch", "hp_metric"}
    assert {h.name for h in experiment.hparam_infos} == {"features", "lr"}
    assert plugin["_hparams_/session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS
    graph = acc.Graph()
    assert any("Linear" in node.op or "linear" in node.name.lower() for node in graph.node)


def test_by_name_and_nested_hyperparameters_flattened(tmp_path):
    class Nested(BoringModule):
        def __init__(self, optimizer=None, layers=(64, 64)):
            super().__init__()
            self.save_hyperparameters()

    trainer = quiet_trainer(tmp_path, logger="tensorboard", max_epochs=1, log_every_n_steps=2)
    assert isinstance(trainer.logger, TensorBoardLogger)
    trainer.fit(Nested(optimizer={"name": "sgd", "momentum": 0.9}), loader(), loader())
    plugin, _ = hparams_plugin(trainer.logger.log_dir)
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["optimizer/name"].string_value == "sgd"
    assert hparams["optimizer/momentum"].number_value == 0.9
    assert hparams["layers"].string_value == "[64, 64]"
    assert [s for s, _ in tb_scalars(trainer.logger.log_dir)["train_loss"]] == [2, 4, 6, 8]
