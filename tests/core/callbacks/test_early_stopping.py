"""EarlyStopping: patience/min_delta, modes, thresholds, non-finite values, strictness, state."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks import EarlyStopping, ModelCheckpoint
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


class ScriptedModule(BoringModule):
    """Logs ``score`` in validation from a per-epoch script and records which epochs ran."""

    def __init__(self, scores=(), features: int = 8, lr: float = 0.05) -> None:
        super().__init__(features=features, lr=lr)
        self.scores = list(scores)
        self.validated_epochs = []

    def validation_step(self, batch, batch_idx):
        self.validated_epochs.append(self.current_epoch)
        self.log("score", torch.tensor(float(self.scores[self.current_epoch])))


def _fit(tmp_path, callbacks, scores, max_epochs=None, ckpt_path=None, **kwargs):
    model = ScriptedModule(scores)
    trainer = quiet_trainer(
        tmp_path, max_epochs=max_epochs or len(scores), callbacks=callbacks, limit_train_batches=2,
        limit_val_batches=1, num_sanity_val_steps=0, **kwargs,
    )
    trainer.fit(model, loader(), loader(), ckpt_path=ckpt_path)
    return trainer, model


def test_patience_and_min_delta_stop_at_expected_epoch(tmp_path):
    # Improvements must exceed 0.1: epoch 1 does (1.0 -> 0.5), epochs 2 and 3 do not.
    es = EarlyStopping(monitor="score", patience=2, min_delta=0.1)
    trainer, model = _fit(tmp_path, [es], scores=[1.0, 0.5, 0.45, 0.44, 0.1, 0.0, 0.0, 0.0])
    assert model.validated_epochs == [0, 1, 2, 3]
    assert es.stopped_epoch == 3
    assert es.wait_count == 2
    assert float(es.best_score) == pytest.approx(0.5)
    assert trainer.should_stop
    assert trainer.current_epoch == 4  # the stopped epoch completed, as in Lightning
    assert "did not improve" in es.stopping_reason


def test_without_min_delta_small_improvements_reset_patience(tmp_path):
    es = EarlyStopping(monitor="score", patience=2)
    _, model = _fit(tmp_path, [es], scores=[1.0, 0.5, 0.45, 0.44, 0.43, 0.5, 0.6, 0.0])
    assert model.validated_epochs == [0, 1, 2, 3, 4, 5, 6]
    assert es.stopped_epoch == 6


def test_mode_max(tmp_path):
    es = EarlyStopping(monitor="score", mode="max", patience=2)
    _, model = _fit(tmp_path, [es], scores=[0.1, 0.5, 0.6, 0.6, 0.55, 0.9, 0.95])
    assert model.validated_epochs == [0, 1, 2, 3, 4]
    assert float(es.best_score) == pytest.approx(0.6)


def test_stopping_threshold(tmp_path):
    es = EarlyStopping(monitor="score", patience=100, stopping_threshold=0.3)
    _, model = _fit(tmp_path, [es], scores=[1.0, 0.5, 0.2, 0.1, 0.05])
    assert model.validated_epochs == [0, 1, 2]
    assert "stopping_threshold" in es.stopping_reason


def test_divergence_threshold(tmp_path):
    es = EarlyStopping(monitor="score", patience=100, divergence_threshold=5.0)
    _, model = _fit(tmp_path, [es], scores=[1.0, 2.0, 10.0, 0.1, 0.1])
    assert model.validated_epochs == [0, 1, 2]
    assert "divergence_threshold" in es.stopping_reason


def test_check_finite_stops_on_nan(tmp_path):
    es = EarlyStopping(monitor="score", patience=100)
    _, model = _fit(tmp_path, [es], scores=[1.0, math.nan, 0.5, 0.4])
    assert model.validated_epochs == [0, 1]
    assert "not finite" in es.stopping_reason


def test_check_finite_false_treats_nan_as_no_improvement(tmp_path):
    es = EarlyStopping(monitor="score", patience=100, check_finite=False)
    _, model = _fit(tmp_path, [es], scores=[1.0, math.nan, 0.5, 0.4])
    assert model.validated_epochs == [0, 1, 2, 3]


def test_missing_metric_strict_raises_clear_error(tmp_path):
    es = EarlyStopping(monitor="val_acc")
    with pytest.raises(FulmenUserCodeError, match="val_acc") as info:
        _fit(tmp_path, [es], scores=[1.0, 1.0])
    assert "score" in str(info.value)
    assert "strict=False" in str(info.value)


def test_missing_metric_not_strict_trains_on(tmp_path):
    es = EarlyStopping(monitor="val_acc", strict=False, patience=0)
    trainer, model = _fit(tmp_path, [es], scores=[1.0, 1.0, 1.0])
    assert model.validated_epochs == [0, 1, 2]
    assert trainer.current_epoch == 3 and es.stopped_epoch == 0


def test_checks_at_train_epoch_end_without_validation(tmp_path):
    class TrainScored(BoringModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("flat", 1.0, on_step=False, on_epoch=True)
            return loss

    es = EarlyStopping(monitor="flat", patience=1)
    trainer = quiet_trainer(tmp_path, max_epochs=10, limit_train_batches=2, callbacks=[es])
    trainer.fit(TrainScored(), loader())
    # Epoch 0 sets the best, epoch 1 does not improve: patience 1 is used up.
    assert es.stopped_epoch == 1
    assert trainer.current_epoch == 2


def test_invalid_settings():
    with pytest.raises(FulmenConfigError):
        EarlyStopping(monitor="x", mode="maximum")
    with pytest.raises(FulmenConfigError):
        EarlyStopping(monitor="x", patience=-1)


def test_state_dict_round_trip():
    es = EarlyStopping(monitor="score", patience=4)
    es.wait_count, es.stopped_epoch, es.best_score = 2, 0, torch.tensor(0.25)
    fresh = EarlyStopping(monitor="score", patience=4)
    fresh.load_state_dict(es.state_dict())
    assert fresh.wait_count == 2 and float(fresh.best_score) == 0.25


def test_wait_count_restored_through_checkpoint_resume(tmp_path):
    scores = [1.0, 2.0, 2.0, 3.0, 0.1, 0.1]
    first = EarlyStopping(monitor="score", patience=3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    _fit(tmp_path, [first, ckpt], scores=scores, max_epochs=3)
    assert first.wait_count == 2
    saved = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)["callbacks"][first.state_key]
    assert saved["wait_count"] == 2 and saved["best_score"] == 1.0

    class Probe(fulmen.Callback):
        def on_train_start(self, trainer):
            self.seen = (es.wait_count, float(es.best_score))

    es = EarlyStopping(monitor="score", patience=3)
    probe = Probe()
    trainer, model = _fit(tmp_path, [es, probe], scores=scores, max_epochs=6, ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    assert probe.seen == (2, 1.0)
    # One more epoch without improvement exhausts patience: stops at epoch 3, not later.
    assert model.validated_epochs == [3]
    assert es.stopped_epoch == 3 and es.wait_count == 3
    assert trainer.current_epoch == 4
