"""ProgressBar output, ModelSummary's table and Timer's time limit and state."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
import torch
from torch import nn
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks import ModelCheckpoint, ModelSummary, ProgressBar, Timer
from fulmen.callbacks.timer import parse_duration
from fulmen.errors import FulmenConfigError


# ---------------------------------------------------------------------------- progress bar
def test_progress_bar_shows_epoch_and_prog_bar_metric(tmp_path):
    stream = io.StringIO()
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=2, enable_progress_bar=True,
        callbacks=[ProgressBar(file=stream)],
    )
    trainer.fit(BoringModule(), loader(), loader())
    text = stream.getvalue()
    assert "Epoch 0" in text and "Epoch 1" in text
    assert "train_loss=" in text
    assert "val_loss=" in text
    assert "3/3" in text
    assert trainer.progress_bar_callback is trainer.callbacks[0]


def test_progress_bar_for_test_and_predict(tmp_path):
    stream = io.StringIO()
    trainer = quiet_trainer(tmp_path, enable_progress_bar=True, callbacks=[ProgressBar(file=stream, leave=True)])
    model = BoringModule()
    trainer.test(model, loader(n=16), verbose=False)
    trainer.predict(model, loader(n=16))
    text = stream.getvalue()
    assert "Testing" in text and "Predicting" in text


def test_default_progress_bar_writes_to_stderr(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, enable_progress_bar=True)
    trainer.fit(BoringModule(), loader())
    assert "Epoch 0" in capsys.readouterr().err


def test_enable_progress_bar_false_shows_nothing(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, enable_progress_bar=False)
    trainer.fit(BoringModule(), loader(), loader())
    captured = capsys.readouterr()
    assert trainer.progress_bar_callback is None
    assert "Epoch" not in captured.err and "Epoch" not in captured.out
    assert "it/s" not in captured.err


def test_progress_bar_conflicts_with_enable_progress_bar_false(tmp_path):
    with pytest.raises(FulmenConfigError, match="enable_progress_bar=False"):
        quiet_trainer(tmp_path, enable_progress_bar=False, callbacks=[ProgressBar()])


# ---------------------------------------------------------------------------- model summary
class TwoLayers(BoringModule):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(8, 4)  # 36 parameters, not trained
        self.frozen.requires_grad_(False)


def test_model_summary_prints_parameter_counts(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, enable_model_summary=True)
    trainer.fit(TwoLayers(), loader())
    out = capsys.readouterr().out
    assert "layer" in out and "frozen" in out and "Linear" in out
    assert "9 trainable params" in out
    assert "36 non-trainable params" in out
    assert "45 total params" in out
    assert f"{45 * 4 / 1e6:.3f} MB total parameter size" in out


def test_model_summary_depth_and_disable(tmp_path, capsys):
    class Nested(BoringModule):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[ModelSummary(max_depth=2)])
    trainer.fit(Nested(), loader())
    out = capsys.readouterr().out
    assert "block.0" in out and "ReLU" in out
    assert "81 trainable params" in out

    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, enable_model_summary=False)
    trainer.fit(Nested(), loader())
    assert "trainable params" not in capsys.readouterr().out


# ---------------------------------------------------------------------------- timer
class SlowModule(BoringModule):
    def training_step(self, batch, batch_idx):
        time.sleep(0.05)
        return super().training_step(batch, batch_idx)


def test_parse_duration():
    assert parse_duration("00:01:02:03") == timedelta(hours=1, minutes=2, seconds=3)
    assert parse_duration({"minutes": 5}) == timedelta(minutes=5)
    assert parse_duration(timedelta(seconds=4)) == timedelta(seconds=4)
    with pytest.raises(FulmenConfigError, match="DD:HH:MM:SS"):
        parse_duration("5 minutes")


def test_max_time_stops_training(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1000, limit_train_batches=2, max_time={"seconds": 0.3})
    start = time.monotonic()
    trainer.fit(SlowModule(), loader())
    assert time.monotonic() - start < 10
    # 0.05 s per step: at most 6 steps fit into 0.3 s, and the limit ended the run.
    assert 1 <= trainer.global_step <= 6
    assert trainer.current_epoch < 1000
    timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
    assert timer.time_elapsed("train") >= 0.3
    assert timer.time_remaining("train") <= 0


def test_timer_measures_stages(tmp_path):
    timer = Timer()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[timer])
    trainer.fit(SlowModule(), loader(), loader())
    assert timer.time_elapsed("train") >= 0.1
    assert timer.start_time("validate") is not None
    assert timer.time_remaining() is None
    elapsed = timer.time_elapsed("train")
    time.sleep(0.02)
    assert timer.time_elapsed("train") == elapsed  # stopped at train end


def test_timer_elapsed_time_restored_on_resume(tmp_path):
    first = Timer()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[first, ckpt])
    trainer.fit(SlowModule(), loader())
    saved = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"]
    assert saved >= 0.2

    class Probe(fulmen.Callback):
        def on_train_start(self):
            self.elapsed = timer.time_elapsed("train")

    # Resume with a limit the earlier run already used up: one batch, then stop.
    timer, probe = Timer(duration=timedelta(seconds=saved)), Probe()
    resumed = quiet_trainer(tmp_path, max_epochs=50, limit_train_batches=2, callbacks=[timer, probe])
    resumed.fit(SlowModule(), loader(), ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    assert probe.elapsed >= saved
    assert resumed.global_step == 4 + 1
    assert timer.time_elapsed("train") >= saved + 0.05


def test_timer_state_dict_round_trip():
    timer = Timer()
    timer._offset = 12.5
    fresh = Timer()
    fresh.load_state_dict(timer.state_dict())
    assert fresh.time_elapsed("train") == 12.5


def test_max_time_and_timer_conflict(tmp_path):
    with pytest.raises(FulmenConfigError, match="max_time"):
        quiet_trainer(tmp_path, max_time="00:00:01:00", callbacks=[Timer()])
