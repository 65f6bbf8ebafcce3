"""CSVLogger: versioned folders, hparams.json, metrics.csv with a header that widens."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import BoringModule, loader, quiet_trainer

from fulmen.loggers import CSVLogger


def _read(path):
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def test_versions_increment(tmp_path):
    first = CSVLogger(tmp_path, name="exp")
    assert first.version == 0
    assert Path(first.log_dir) == tmp_path / "exp" / "version_0"
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")

    second = CSVLogger(tmp_path, name="exp")
    assert second.version == 1
    assert Path(second.log_dir) == tmp_path / "exp" / "version_1"
    # The version is fixed once asked for, even after more folders appear.
    (tmp_path / "exp" / "version_7").mkdir()
    assert second.version == 1
    assert CSVLogger(tmp_path, name="exp").version == 8


def test_explicit_versions(tmp_path):
    assert Path(CSVLogger(tmp_path, name="e", version=3).log_dir) == tmp_path / "e" / "version_3"
    assert Path(CSVLogger(tmp_path, name="e", version="run_a").log_dir) == tmp_path / "e" / "run_a"


def test_trainer_runs_get_new_versions_and_hparams(tmp_path):
    for expected in ("version_0", "version_1"):
        trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
        trainer.fit(BoringModule(features=8, lr=0.02), loader())
        assert Path(trainer.logger.log_dir).name == expected
    folder = tmp_path / "fulmen_logs"
    assert sorted(p.name for p in folder.iterdir()) == ["version_0", "version_1"]
    hparams = json.loads((folder / "version_1" / "hparams.json").read_text())
    assert hparams == {"features": 8, "lr": 0.02}
    header, rows = _read(folder / "version_1" / "metrics.csv")
    assert header[0] == "step" and "train_loss" in header and "epoch" in header
    assert len(rows) >= 1


def test_log_hyperparams_writes_json(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1, "layers": [1, 2], "name": "m", "nested": {"a": None}})
    data = json.loads((Path(logger.log_dir) / "hparams.json").read_text())
    assert data == {"lr": 0.1, "layers": [1, 2], "name": "m", "nested": {"a": None}}


def test_header_widens_when_new_keys_appear(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "loss"]
    logger.log_metrics({"loss": 0.25, "acc": 0.9}, step=2)
    logger.log_metrics({"val": 3.0}, step=3)
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "acc", "loss", "val"]
    assert rows == [
        ["0", "", "1.0", ""],
        ["1", "", "0.5", ""],
        ["2", "0.9", "0.25", ""],
        ["3", "", "", "3.0"],
    ]
    # Keys already known append without rewriting.
    logger.log_metrics({"acc": 0.95}, step=4)
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "acc", "loss", "val"]
    assert rows[-1] == ["4", "0.95", "", ""]
    assert [p.name for p in Path(logger.log_dir).iterdir()] == ["metrics.csv"]


def test_header_widens_across_buffered_flushes(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=2)
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_metrics({"a": 2.0}, step=1)  # flush: header step,a
    logger.log_metrics({"b": 3.0}, step=2)
    logger.log_metrics({"a": 4.0, "b": 5.0}, step=3)  # flush: widened
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "a", "b"]
    assert rows == [["0", "1.0", ""], ["1", "2.0", ""], ["2", "", "3.0"], ["3", "4.0", "5.0"]]


def test_rows_are_buffered_until_finalize(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=100)
    for step in range(3):
        logger.log_metrics({"loss": float(step)}, step=step)
    assert not logger.metrics_file.exists()
    logger.finalize("success")
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "loss"]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    logger.finalize("success")  # nothing pending: the file stays as it is
    assert len(_read(logger.metrics_file)[1]) == 3


def test_trainer_flushes_rows_when_fit_fails(tmp_path):
    class Crash(BoringModule):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=2, log_every_n_steps=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Crash(), loader())
    header, rows = _read(trainer.logger.metrics_file)
    assert "train_loss" in header
    assert [r[0] for r in rows] == ["1", "2"]


def test_state_dict_keeps_version_and_header(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"b": 1.0, "a": 2.0}, step=0)
    again = CSVLogger(tmp_path)
    again.load_state_dict(logger.state_dict())
    assert again.log_dir == logger.log_dir
    again.log_metrics({"a": 3.0}, step=1)
    again.finalize("success")
    header, rows = _read(logger.metrics_file)
    assert header == ["step", "a", "b"]
    assert rows == [["0", "2.0", "1.0"], ["1", "3.0", ""]]


def test_reusing_a_version_keeps_existing_columns(tmp_path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"a": 1.0}, step=0)
    first.finalize("success")
    second = CSVLogger(tmp_path, version=0)  # same folder, no state loaded
    second.log_metrics({"b": 2.0}, step=1)
    second.finalize("success")
    header, rows = _read(second.metrics_file)
    assert header == ["step", "a", "b"]
    assert rows == [["0", "1.0", ""], ["1", "", "2.0"]]


def test_metric_appearing_in_a_later_epoch_widens_the_trainer_file(tmp_path):
    class Late(BoringModule):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                self.log("late", 7.0)
            return super().training_step(batch, batch_idx)

    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, log_every_n_steps=1, logger=logger)
    trainer.fit(Late(), loader())
    with open(logger.metrics_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["late"] for r in rows] == ["", "", "7.0", "7.0"]
    assert all(r["train_loss"] for r in rows)
