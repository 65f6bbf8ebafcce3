"""Hyperparameters in checkpoints, ``load_from_checkpoint`` and resuming a fit."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks.model_checkpoint import ModelCheckpoint


class AdamModule(BoringModule):
    def __init__(self, features: int = 8, lr: float = 0.01, note: str = "x"):
        super().__init__(features=features, lr=lr)
        self.save_hyperparameters()

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)}


class Progress(fulmen.Callback):
    def __init__(self):
        self.epochs = []
        self.start = None

    def on_train_start(self, trainer):
        opt = trainer.optimizers[0].optimizer
        state = opt.state[next(iter(trainer.module.parameters()))]
        self.start = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "adam_step": int(state["step"]) if "step" in state else 0,
            "lr": opt.param_groups[0]["lr"],
        }

    def on_train_epoch_start(self, trainer):
        self.epochs.append(trainer.current_epoch)


def test_save_hyperparameters_and_load_from_checkpoint(tmp_path):
    model = AdamModule(features=8, lr=0.02, note="hello")
    assert dict(model.hparams) == {"features": 8, "lr": 0.02, "note": "hello"}
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, loader(16))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = AdamModule.load_from_checkpoint(path)
    assert dict(loaded.hparams) == {"features": 8, "lr": 0.02, "note": "hello"}
    assert not loaded.training  # returned in eval mode
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)

    overridden = AdamModule.load_from_checkpoint(path, lr=0.5, note="override")
    assert overridden.hparams.lr == 0.5 and overridden.hparams.note == "override"
    assert overridden.hparams.features == 8
    assert torch.equal(overridden.layer.weight, model.layer.weight)


def test_hparams_are_logged_and_stored_in_checkpoints(tmp_path):
    import json
    from pathlib import Path

    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(AdamModule(lr=0.03), loader(16))
    hparams = json.loads((Path(trainer.logger.log_dir) / "hparams.json").read_text())
    assert hparams == {"features": 8, "lr": 0.03, "note": "x"}
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert checkpoint["hyper_parameters"] == hparams
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2


def test_load_from_checkpoint_without_needed_args_explains(tmp_path):
    class NoHparams(BoringModule):
        def __init__(self, width):
            super().__init__()
            self._hparams.clear()
            self.width = width

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = NoHparams(8)
    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, loader(8))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(fulmen.errors.FulmenConfigError, match="save_hyperparameters"):
        NoHparams.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(NoHparams.load_from_checkpoint(tmp_path / "m.ckpt", width=8).layer.weight, model.layer.weight)


def fit_epochs(tmp_path, max_epochs, ckpt_path=None, **kwargs):
    progress = Progress()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1, save_last=True)
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, logger=False, num_sanity_val_steps=0,
                            callbacks=[progress, checkpoint], **kwargs)
    model = AdamModule()
    trainer.fit(model, loader(32), loader(8), ckpt_path=ckpt_path)
    return trainer, model, progress


def test_resume_continues_where_training_stopped(tmp_path):
    torch.manual_seed(0)
    fit_epochs(tmp_path, max_epochs=2)
    saved = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert saved == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]
    path = tmp_path / "ckpts" / "epoch=1-step=8.ckpt"

    torch.manual_seed(1)  # a different initialisation, overwritten by the checkpoint
    resumed, resumed_model, progress = fit_epochs(tmp_path, max_epochs=4, ckpt_path=str(path))
    assert progress.epochs == [2, 3]
    # The file was written in epoch 1's last validation; that epoch's end (on_train_epoch_end,
    # its log row, plateau schedulers) comes first in the resumed run, as it did in the first.
    assert progress.start["epoch"] == 1 and progress.start["global_step"] == 8
    assert progress.start["adam_step"] == 8  # the optimizer state came back
    assert progress.start["lr"] == pytest.approx(0.01 * 0.9**2)  # and the scheduler's
    assert resumed.global_step == 16 and resumed.current_epoch == 4

    # the same as four epochs in one go
    torch.manual_seed(0)
    _, straight_model, _ = fit_epochs(tmp_path / "straight", max_epochs=4)
    for a, b in zip(resumed_model.parameters(), straight_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_from_last(tmp_path):
    fit_epochs(tmp_path, max_epochs=1)
    _, _, progress = fit_epochs(tmp_path, max_epochs=3, ckpt_path="last")
    assert progress.epochs == [1, 2] and progress.start["global_step"] == 4


def test_resume_from_last_with_the_default_checkpoint_callback(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(AdamModule(), loader(32))
    progress = Progress()
    again = quiet_trainer(tmp_path, max_epochs=2, callbacks=[progress])
    again.fit(AdamModule(), loader(32), ckpt_path="last")
    assert progress.epochs == [1] and progress.start["global_step"] == 4


def test_resume_from_last_without_any_checkpoint_starts_fresh(tmp_path):
    with pytest.warns(fulmen.errors.FulmenWarning, match="found no checkpoint"):
        _, _, progress = fit_epochs(tmp_path, max_epochs=1, ckpt_path="last")
    assert progress.epochs == [0]


def test_resume_when_max_epochs_already_reached_trains_nothing(tmp_path):
    _, first_model, _ = fit_epochs(tmp_path, max_epochs=2)
    resumed, resumed_model, progress = fit_epochs(tmp_path, max_epochs=2, ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    assert progress.epochs == [] and resumed.global_step == 8
    assert torch.equal(resumed_model.layer.weight, first_model.layer.weight)


def test_resume_from_a_weights_only_checkpoint_is_refused(tmp_path):
    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False)
    trainer.fit(AdamModule(), loader(8))
    trainer.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(fulmen.errors.FulmenCheckpointError, match="weights only"):
        quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False).fit(
            AdamModule(), loader(8), ckpt_path=tmp_path / "w.ckpt")


def test_resume_from_a_mid_epoch_checkpoint_continues_with_the_next_batch(tmp_path):
    class Batches(fulmen.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, batch_idx):
            self.seen.append((trainer.current_epoch, batch_idx, trainer.global_step))

    every = ModelCheckpoint(dirpath=tmp_path / "mid", every_n_train_steps=3)
    first = quiet_trainer(tmp_path, max_steps=3, logger=False, callbacks=[every])
    first.fit(AdamModule(), loader(64))  # 8 batches per epoch; saved after batch 2 (step 3)
    path = tmp_path / "mid" / "epoch=0-step=3.ckpt"
    assert path.exists()

    batches = Batches()
    resumed = quiet_trainer(tmp_path, max_steps=6, logger=False, enable_checkpointing=False, callbacks=[batches])
    resumed.fit(AdamModule(), loader(64), ckpt_path=path)
    # batch 2 was already trained before the checkpoint: it is not repeated
    assert batches.seen == [(0, 3, 3), (0, 4, 4), (0, 5, 5)]
