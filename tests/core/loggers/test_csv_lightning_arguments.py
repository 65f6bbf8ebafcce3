"""CSVLogger with Lightning's constructor arguments: Fabric's ``root_dir`` and the Trainer's
``save_dir`` give the layout ``<dir>/<name>/version_N/metrics.csv``; ``name``, ``version``
and ``prefix`` mean what they mean in Lightning. Files are read back after real runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.loggers import CSVLogger


def rows_of(logger):
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def fabric_loop(logger, steps=4):
    """A plain Fabric loop logging its loss at every step; returns the losses it logged."""
    fabric = fulmen.Fabric(accelerator="cpu", loggers=logger)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
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


def test_fabric_style_root_dir_name_version_and_prefix(tmp_path):
    logger = CSVLogger(root_dir=tmp_path, name="exp", version=3, prefix="fab", flush_logs_every_n_steps=2)
    losses = fabric_loop(logger)
    assert Path(logger.log_dir) == tmp_path / "exp" / "version_3"
    assert logger.save_dir == str(tmp_path) and logger.root_dir == tmp_path / "exp"
    rows = rows_of(logger)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["fab-loss"]) for r in rows] == pytest.approx(losses)  # Lightning's "prefix-name"


def test_fabric_style_versions_count_up_and_empty_name_has_no_folder(tmp_path):
    first, second = CSVLogger(root_dir=tmp_path), CSVLogger(root_dir=tmp_path)
    fabric_loop(first, steps=1)
    fabric_loop(second, steps=1)
    assert [first.log_dir, second.log_dir] == [str(tmp_path / "fulmen_logs" / f"version_{n}") for n in (0, 1)]
    flat = CSVLogger(tmp_path / "flat", name="", version="run_a")
    fabric_loop(flat, steps=2)
    assert Path(flat.log_dir) == tmp_path / "flat" / "run_a" and len(rows_of(flat)) == 2
    assert CSVLogger(tmp_path / "none", name=None).log_dir == str(tmp_path / "none" / "version_0")


def test_trainer_style_save_dir_in_a_fit(tmp_path):
    logger = CSVLogger(tmp_path / "logs", "model", 7)  # Lightning's positional order
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=2, num_sanity_val_steps=0)
    trainer.fit(BoringModule(), loader(32))  # 4 steps
    assert trainer.log_dir == str(tmp_path / "logs" / "model" / "version_7")
    rows = rows_of(logger)
    assert [int(r["step"]) for r in rows if r.get("train_loss")] == [2, 4]


def test_save_dir_and_root_dir_together_is_an_error(tmp_path):
    with pytest.raises(FulmenConfigError, match=r"CSVLogger\(save_dir=.*root_dir=.*pass one of them"):
        CSVLogger(save_dir=tmp_path, root_dir=tmp_path)
