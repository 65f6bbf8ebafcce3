"""The loggers take Lightning's constructor arguments: Fabric's ``root_dir`` or the
Trainer's ``save_dir`` (one of them), ``name`` and ``version`` laid out as
``<dir>/<name>/version_N[/<sub_dir>]``, TensorBoard's ``default_hp_metric`` and ``sub_dir``.
Event files are read back with TensorBoard's EventAccumulator after real runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer
from logger_helpers import tb_scalars

import fulmen
from fulmen.errors import FulmenConfigError

FAST = dict(retry_initial=0.1, retry_max=1.0, flush_interval=0.05, close_timeout=60)


def fabric_loop(logger, steps=4):
    """A plain Fabric loop: hyperparameters once, the loss at every step; returns the losses."""
    fabric = fulmen.Fabric(accelerator="cpu", loggers=logger)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    fabric.logger.log_hyperparams({"lr": 0.1})
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    losses = []
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        fabric.log("loss", loss, step=step)
        losses.append(loss.item())
    fabric.logger.finalize("success")
    return losses


def test_tensorboard_fabric_style(tmp_path):
    pytest.importorskip("tensorboard")
    from fulmen_loggers import TensorBoardLogger

    logger = TensorBoardLogger(root_dir=tmp_path, name="exp", version=3, default_hp_metric=False, prefix="fab",
                               sub_dir="train", **FAST)
    losses = fabric_loop(logger)
    assert Path(logger.log_dir) == tmp_path / "exp" / "version_3" / "train"
    assert logger.root_dir == str(tmp_path / "exp") and logger.save_dir == str(tmp_path)
    assert logger.sub_dir == "train" and logger.name == "exp" and logger.version == 3
    scalars = tb_scalars(logger.log_dir)
    assert set(scalars) == {"fab-loss"}  # Lightning's prefix join; no hp_metric when turned off
    assert [s for s, _ in scalars["fab-loss"]] == [0, 1, 2, 3]
    assert [v for _, v in scalars["fab-loss"]] == pytest.approx(losses, rel=1e-6)


def test_tensorboard_versions_count_up_and_hp_metric_by_default(tmp_path):
    pytest.importorskip("tensorboard")
    from fulmen_loggers import TensorBoardLogger

    first = TensorBoardLogger(root_dir=tmp_path, **FAST)
    fabric_loop(first, steps=1)
    second = TensorBoardLogger(root_dir=tmp_path, **FAST)
    fabric_loop(second, steps=1)
    assert [first.log_dir, second.log_dir] == [str(tmp_path / "fulmen_logs" / f"version_{n}") for n in (0, 1)]
    assert tb_scalars(second.log_dir)["hp_metric"] == [(0, -1.0)]


def test_tensorboard_trainer_style_in_a_fit(tmp_path):
    pytest.importorskip("tensorboard")
    from fulmen_loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path / "tb", "", "run_a", **FAST)  # Lightning's positional order
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=2, num_sanity_val_steps=0)
    trainer.fit(BoringModule(), loader(32))  # 4 steps
    assert trainer.log_dir == str(tmp_path / "tb" / "run_a") == logger.log_dir
    scalars = tb_scalars(logger.log_dir)
    assert [s for s, _ in scalars["train_loss"]] == [2, 4]
    assert scalars["hp_metric"] == [(0, -1.0)]


def _loggers():
    from fulmen.loggers import CSVLogger
    from fulmen_loggers import ClearMLLogger, CometLogger, MLflowLogger, TensorBoardLogger, WandbLogger

    return {"CSVLogger": CSVLogger, "TensorBoardLogger": TensorBoardLogger, "MLflowLogger": MLflowLogger,
            "WandbLogger": WandbLogger, "ClearMLLogger": ClearMLLogger, "CometLogger": CometLogger}


@pytest.mark.parametrize("name", ["CSVLogger", "TensorBoardLogger", "MLflowLogger", "WandbLogger", "ClearMLLogger",
                                  "CometLogger"])
def test_root_dir_is_save_dir_and_both_is_an_error(tmp_path, name):
    cls = _loggers()[name]
    by_root, by_save = cls(root_dir=tmp_path), cls(save_dir=tmp_path)
    assert by_root.save_dir == by_save.save_dir == str(tmp_path)
    if name not in ("WandbLogger", "CometLogger"):  # a W&B run id, a Comet key: random unless given
        assert by_root.log_dir == by_save.log_dir and Path(by_root.log_dir).is_relative_to(tmp_path)
    with pytest.raises(FulmenConfigError, match=rf"{name}\(save_dir=.*root_dir=.*pass one of them"):
        cls(save_dir=tmp_path, root_dir=tmp_path / "other")
