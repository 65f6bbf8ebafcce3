"""ModelCheckpoint: top-k by a metric, last, step/epoch triggers, weights-only, state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks import ModelCheckpoint
from fulmen.errors import FulmenCheckpointError, FulmenConfigError, FulmenUserCodeError


class ScriptedModule(BoringModule):
    """Logs ``score`` in validation with a value chosen per epoch, so rankings are known."""

    def __init__(self, scores=(), features: int = 8, lr: float = 0.05) -> None:
        super().__init__(features=features, lr=lr)
        self.scores = list(scores)

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("score", torch.tensor(float(self.scores[self.current_epoch])))


def _fit(tmp_path, callbacks, scores=(5.0, 3.0, 4.0, 1.0, 2.0), max_epochs=None, **kwargs):
    model = ScriptedModule(scores)
    kwargs.setdefault("limit_train_batches", 2)
    kwargs.setdefault("limit_val_batches", 1)
    kwargs.setdefault("num_sanity_val_steps", 0)
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs or len(scores), callbacks=callbacks, **kwargs)
    trainer.fit(model, loader(), loader())
    return trainer, model


def _names(directory) -> list:
    return sorted(p.name for p in Path(directory).iterdir())


@pytest.mark.parametrize(
    "mode, expected_files, best_name, best_score",
    [
        ("min", ["epoch=3-score=1.000.ckpt", "epoch=4-score=2.000.ckpt"], "epoch=3-score=1.000.ckpt", 1.0),
        ("max", ["epoch=0-score=5.000.ckpt", "epoch=2-score=4.000.ckpt"], "epoch=0-score=5.000.ckpt", 5.0),
    ],
)
def test_save_top_k_keeps_exactly_the_k_best(tmp_path, mode, expected_files, best_name, best_score):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", mode=mode, save_top_k=2, filename="{epoch}-{score:.3f}")
    _fit(tmp_path, [cb])
    assert _names(tmp_path / "ckpts") == expected_files
    assert Path(cb.best_model_path).name == best_name
    assert float(cb.best_model_score) == pytest.approx(best_score)
    assert sorted(Path(p).name for p in cb.best_k_models) == expected_files
    kth = [n for n in expected_files if n != best_name][0]
    assert Path(cb.kth_best_model_path).name == kth
    # The file really holds the state of that epoch.
    checkpoint = torch.load(cb.best_model_path, weights_only=True)
    assert checkpoint["epoch"] == int(best_name.split("-")[0].split("=")[1])


def test_filename_template_with_real_metric_value(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=-1, filename="{epoch}-{val_loss:.3f}")
    trainer, _ = _fit(tmp_path, [cb], scores=(1.0, 1.0, 1.0))
    assert len(cb.best_k_models) == 3
    for path, score in cb.best_k_models.items():
        epoch = torch.load(path, weights_only=True)["epoch"]
        assert Path(path).name == f"epoch={epoch}-val_loss={score:.3f}.ckpt"
    last_epoch_file = [p for p in cb.best_k_models if Path(p).name.startswith("epoch=2-")][0]
    assert cb.best_k_models[last_epoch_file] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert _names(tmp_path / "ckpts") == sorted(Path(p).name for p in cb.best_k_models)


def test_filename_without_auto_inserted_metric_names(tmp_path):
    cb = ModelCheckpoint(
        dirpath=tmp_path / "ckpts", monitor="score", filename="model-{epoch:02d}-{score:.1f}",
        auto_insert_metric_name=False,
    )
    _fit(tmp_path, [cb], scores=(2.0, 1.0))
    assert _names(tmp_path / "ckpts") == ["model-01-1.0.ckpt"]


def test_save_top_k_all(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=-1, filename="{epoch}")
    _fit(tmp_path, [cb])
    assert _names(tmp_path / "ckpts") == [f"epoch={e}.ckpt" for e in range(5)]
    assert Path(cb.best_model_path).name == "epoch=3.ckpt"
    assert len(cb.best_k_models) == 5


def test_save_top_k_zero_saves_no_ranked_files(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=0, save_last=True)
    _fit(tmp_path, [cb], scores=(1.0, 2.0))
    assert _names(tmp_path / "ckpts") == ["last.ckpt"]


def test_nan_metric_is_ranked_worst(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=1, filename="{epoch}")
    _fit(tmp_path, [cb], scores=(2.0, math.nan, 3.0))
    assert _names(tmp_path / "ckpts") == ["epoch=0.ckpt"]


def test_without_monitor_keeps_only_the_latest(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts")
    trainer, _ = _fit(tmp_path, [cb], scores=(1.0, 1.0, 1.0))
    assert _names(tmp_path / "ckpts") == [f"epoch=2-step={trainer.global_step}.ckpt"]
    assert cb.best_model_path.endswith(f"epoch=2-step={trainer.global_step}.ckpt")


def test_save_last_exists_and_loads(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=1, save_last=True, filename="{epoch}")
    trainer, model = _fit(tmp_path, [cb])
    assert _names(tmp_path / "ckpts") == ["epoch=3.ckpt", "last.ckpt"]
    assert cb.last_model_path == str(tmp_path / "ckpts" / "last.ckpt")
    checkpoint = torch.load(cb.last_model_path, weights_only=True)
    assert checkpoint["global_step"] == trainer.global_step
    assert checkpoint["epoch"] == 4
    restored = BoringModule.load_from_checkpoint(cb.last_model_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor)


def test_every_n_train_steps(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=3, save_top_k=-1)
    trainer, _ = _fit(tmp_path, [cb], scores=(1.0,) * 4, limit_train_batches=2)
    assert trainer.global_step == 8
    assert _names(tmp_path / "ckpts") == ["epoch=1-step=3.ckpt", "epoch=2-step=6.ckpt"]
    assert torch.load(tmp_path / "ckpts" / "epoch=1-step=3.ckpt", weights_only=True)["global_step"] == 3


def test_every_n_train_steps_with_accumulation_skips_step_zero(tmp_path):
    # With accumulate_grad_batches=4 the first three batches end at global step 0, before
    # any optimizer step: no file for that. Steps 2 and 4 (8 and 16 batches in) get one each.
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = quiet_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=4, callbacks=[cb])
    trainer.fit(BoringModule(), loader(16 * 8, batch_size=8))
    assert trainer.global_step == 4
    assert _names(tmp_path / "ckpts") == ["step=2.ckpt", "step=4.ckpt"]


def test_every_n_epochs(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_epochs=2, save_top_k=-1, filename="{epoch}")
    _fit(tmp_path, [cb], scores=(1.0,) * 5)
    assert _names(tmp_path / "ckpts") == ["epoch=1.ckpt", "epoch=3.ckpt"]


def test_every_n_epochs_without_validation(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_epochs=2, save_top_k=-1, filename="{epoch}-{step}")
    trainer = quiet_trainer(tmp_path, max_epochs=5, limit_train_batches=2, callbacks=[cb])
    trainer.fit(BoringModule(), loader())
    assert _names(tmp_path / "ckpts") == ["epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"]


def test_only_one_trigger_allowed():
    with pytest.raises(FulmenConfigError, match="one of"):
        ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1)


def test_save_top_k_above_one_needs_monitor():
    with pytest.raises(FulmenConfigError, match="monitor"):
        ModelCheckpoint(save_top_k=3)


def test_save_weights_only_checkpoint_cannot_resume(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_weights_only=True, save_last=True)
    trainer, model = _fit(tmp_path, [cb], scores=(1.0, 1.0))
    checkpoint = torch.load(cb.last_model_path, weights_only=True)
    assert "optimizer_states" not in checkpoint and "loops" not in checkpoint
    assert set(checkpoint["state_dict"]) == set(model.state_dict())
    # The weights load into a fresh module...
    BoringModule.load_from_checkpoint(cb.last_model_path)
    # ...but a training resume explains why it cannot continue.
    again = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=2, enable_checkpointing=False)
    with pytest.raises(FulmenCheckpointError, match="weights only"):
        again.fit(BoringModule(), loader(), ckpt_path=cb.last_model_path)


def test_monitor_never_logged_lists_logged_metrics(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_acc")
    with pytest.raises(FulmenUserCodeError, match="val_acc") as info:
        _fit(tmp_path, [cb], scores=(1.0,))
    message = str(info.value)
    assert "val_loss" in message and "score" in message
    assert not (tmp_path / "ckpts").exists() or _names(tmp_path / "ckpts") == []


def test_default_dirpath_is_under_csv_logger_log_dir(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(BoringModule(), loader())
    cb = trainer.checkpoint_callback
    expected = Path(trainer.logger.log_dir) / "checkpoints"
    assert expected == tmp_path / "fulmen_logs" / "version_0" / "checkpoints"
    assert Path(cb.dirpath) == expected
    assert _names(expected) == ["epoch=0-step=2.ckpt"]


def test_default_dirpath_without_logger(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, logger=False)
    trainer.fit(BoringModule(), loader())
    assert Path(trainer.checkpoint_callback.dirpath) == tmp_path / "checkpoints"
    assert _names(tmp_path / "checkpoints") == ["epoch=0-step=2.ckpt"]


def test_no_temporary_files_left_behind(tmp_path):
    cb = ModelCheckpoint(monitor="score", save_top_k=2, save_last=True, filename="{epoch}")
    trainer, _ = _fit(tmp_path, [cb])
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert everything, "the run wrote nothing"
    stray = [p for p in everything if p.name.startswith(".") or p.suffix == ".tmp"]
    assert stray == []
    assert _names(cb.dirpath) == ["epoch=3.ckpt", "epoch=4.ckpt", "last.ckpt"]


def test_checkpoint_loads_with_weights_only_true(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_last=True)
    trainer, model = _fit(tmp_path, [cb], scores=(1.0, 0.5))
    checkpoint = torch.load(cb.best_model_path, weights_only=True)
    for key in ("state_dict", "optimizer_states", "loops", "callbacks", "hyper_parameters", "epoch", "global_step"):
        assert key in checkpoint, key
    assert checkpoint["hyper_parameters"] == {"features": 8, "lr": 0.05}
    assert checkpoint["callbacks"][cb.state_key]["best_model_path"] == cb.best_model_path


def test_state_dict_round_trip(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=2, save_last=True)
    _fit(tmp_path, [cb])
    state = cb.state_dict()
    fresh = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=2, save_last=True)
    fresh.load_state_dict(state)
    assert fresh.best_model_path == cb.best_model_path
    assert float(fresh.best_model_score) == pytest.approx(float(cb.best_model_score))
    assert fresh.best_k_models == cb.best_k_models
    assert fresh.kth_best_model_path == cb.kth_best_model_path
    assert fresh.last_model_path == cb.last_model_path
    assert fresh.state_dict() == state


def test_ranking_continues_across_resume(tmp_path):
    scores = (5.0, 1.0, 4.0, 3.0, 0.5, 6.0)
    first = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=2, save_last=True, filename="{epoch}")
    _fit(tmp_path, [first], scores=scores, max_epochs=3)
    assert _names(tmp_path / "ckpts") == ["epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"]

    second = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=2, save_last=True, filename="{epoch}")
    model = ScriptedModule(scores)
    trainer = quiet_trainer(
        tmp_path, max_epochs=6, callbacks=[second], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0
    )
    trainer.fit(model, loader(), loader(), ckpt_path=str(tmp_path / "ckpts" / "last.ckpt"))
    # Best two over all six epochs: epoch 4 (0.5) and epoch 1 (1.0), including the pre-resume file.
    assert _names(tmp_path / "ckpts") == ["epoch=1.ckpt", "epoch=4.ckpt", "last.ckpt"]
    assert Path(second.best_model_path).name == "epoch=4.ckpt"
    assert trainer.current_epoch == 6


def test_top_k_file_holds_a_ranking_that_includes_itself(tmp_path):
    scores = (3.0, 1.0, 2.0, 5.0)
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=1, filename="{epoch}")
    _fit(tmp_path, [cb], scores=scores, max_epochs=3)
    best = tmp_path / "ckpts" / "epoch=1.ckpt"
    assert _names(tmp_path / "ckpts") == ["epoch=1.ckpt"]
    state = torch.load(best, weights_only=True)["callbacks"][cb.state_key]
    assert state["best_model_path"] == str(best)
    assert list(state["best_k_models"]) == [str(best)]

    # Resuming from the best file must keep top-1: epochs 2 and 3 are worse than epoch 1.
    resumed = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="score", save_top_k=1, filename="{epoch}")
    trainer = quiet_trainer(
        tmp_path, max_epochs=4, callbacks=[resumed], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0
    )
    trainer.fit(ScriptedModule(scores), loader(), loader(), ckpt_path=str(best))
    assert _names(tmp_path / "ckpts") == ["epoch=1.ckpt"]
    assert resumed.best_model_path == str(best)


@pytest.mark.parametrize("monitor", [None, "score"])
def test_existing_files_from_an_earlier_run_are_never_overwritten(tmp_path, monitor):
    def run(seed):
        torch.manual_seed(seed)
        cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor=monitor, filename="{epoch}")
        _fit(tmp_path / f"run{seed}", [cb], scores=(1.0,))
        return cb

    first = run(0)
    before = (tmp_path / "ckpts" / "epoch=0.ckpt").read_bytes()
    second = run(1)
    assert _names(tmp_path / "ckpts") == ["epoch=0-v1.ckpt", "epoch=0.ckpt"]
    assert (tmp_path / "ckpts" / "epoch=0.ckpt").read_bytes() == before
    assert first.best_model_path.endswith("epoch=0.ckpt")
    assert second.best_model_path.endswith("epoch=0-v1.ckpt")
