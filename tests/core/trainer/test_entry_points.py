"""fit/validate/test/predict: what they return, which hooks they run, ``ckpt_path=``."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen


class StageRecorder(fulmen.Callback):
    def __init__(self):
        self.events = []

    def setup(self, trainer, stage):
        self.events.append(("setup", stage))

    def teardown(self, trainer, stage):
        self.events.append(("teardown", stage))

    def on_validation_start(self, trainer):
        self.events.append(("on_validation_start", trainer.state))

    def on_test_start(self, trainer):
        self.events.append(("on_test_start", trainer.state))

    def on_predict_start(self, trainer):
        self.events.append(("on_predict_start", trainer.state))

    def on_predict_batch_end(self, outputs, batch_idx, dataloader_idx):
        self.events.append(("on_predict_batch_end", batch_idx, tuple(outputs.shape)))


def test_fit_returns_none_and_trains(tmp_path):
    model = BoringModule()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    assert trainer.fit(model, loader(32), loader(16)) is None
    assert trainer.state == "finished"
    assert trainer.global_step == 4 and trainer.current_epoch == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.trainer is trainer


def test_validate_and_test_return_one_dict_per_dataloader(tmp_path):
    model = BoringModule()
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    val = trainer.validate(model, loader(16), verbose=False)
    test = trainer.test(model, loader(16), verbose=False)
    assert isinstance(val, list) and len(val) == 1 and set(val[0]) == {"val_loss"}
    assert isinstance(test, list) and len(test) == 1 and set(test[0]) == {"test_loss"}
    # same data, same weights: the same number
    assert val[0]["val_loss"] == pytest.approx(test[0]["test_loss"])
    x, y = loader(16).dataset.tensors
    expected = torch.nn.functional.mse_loss(model(x), y).item()
    assert val[0]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.global_step == 0  # evaluation never steps


def test_validate_prints_results_when_verbose(tmp_path, capsys):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    trainer.validate(BoringModule(), loader(16))
    assert "val_loss" in capsys.readouterr().out
    trainer.validate(BoringModule(), loader(16), verbose=False)
    assert capsys.readouterr().out == ""


def test_predict_returns_predict_step_outputs_in_order(tmp_path):
    model = BoringModule()
    recorder = StageRecorder()
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=[recorder])
    predictions = trainer.predict(model, loader(20, batch_size=8))
    assert [p.shape for p in predictions] == [torch.Size([8, 1]), torch.Size([8, 1]), torch.Size([4, 1])]
    x, _ = loader(20).dataset.tensors
    with torch.no_grad():
        assert torch.allclose(torch.cat(predictions), model(x))
    assert not predictions[0].requires_grad  # inference mode
    assert ("on_predict_start", "predicting") in recorder.events
    assert [e for e in recorder.events if e[0] == "on_predict_batch_end"] == [
        ("on_predict_batch_end", 0, (8, 1)), ("on_predict_batch_end", 1, (8, 1)), ("on_predict_batch_end", 2, (4, 1)),
    ]


def test_predict_with_two_dataloaders_returns_a_list_per_dataloader(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    out = trainer.predict(BoringModule(), [loader(16), loader(8)])
    assert len(out) == 2 and len(out[0]) == 2 and len(out[1]) == 1


def test_setup_and_teardown_receive_the_stage(tmp_path):
    recorder = StageRecorder()

    class Tracked(BoringModule):
        def __init__(self):
            super().__init__()
            self.stages = []

        def setup(self, stage):
            self.stages.append(("setup", stage))

        def teardown(self, stage):
            self.stages.append(("teardown", stage))

    model = Tracked()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                            num_sanity_val_steps=0, callbacks=[recorder])
    trainer.fit(model, loader(16), loader(8))
    trainer.validate(model, loader(8), verbose=False)
    trainer.test(model, loader(8), verbose=False)
    trainer.predict(model, loader(8))
    expected = [(kind, stage) for stage in ("fit", "validate", "test", "predict") for kind in ("setup", "teardown")]
    assert model.stages == expected
    assert [e for e in recorder.events if e[0] in ("setup", "teardown")] == expected
    assert ("on_validation_start", "fitting") in recorder.events
    assert ("on_validation_start", "validating") in recorder.events
    assert ("on_test_start", "testing") in recorder.events


def test_missing_step_methods_are_named(tmp_path):
    class NoEval(fulmen.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    with pytest.raises(fulmen.errors.FulmenUserCodeError, match="validation_step"):
        trainer.validate(NoEval(), loader(8))
    with pytest.raises(fulmen.errors.FulmenUserCodeError, match="test_step"):
        trainer.test(NoEval(), loader(8))
    with pytest.raises(fulmen.errors.FulmenUserCodeError, match="predict_step"):
        trainer.predict(NoEval(), loader(8))


def test_validate_and_test_load_weights_from_ckpt_path(tmp_path):
    model = BoringModule()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False)
    trainer.fit(model, loader(32))
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    trained = trainer.validate(model, loader(16), verbose=False)[0]["val_loss"]

    fresh = BoringModule()
    with torch.no_grad():
        for p in fresh.parameters():
            p.fill_(3.0)
    other = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    untrained = other.validate(fresh, loader(16), verbose=False)[0]["val_loss"]
    assert untrained != pytest.approx(trained)

    restored = other.validate(fresh, loader(16), ckpt_path=str(path), verbose=False)[0]["val_loss"]
    assert restored == pytest.approx(trained)
    for a, b in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(a, b)
    tested = other.test(BoringModule(), loader(16), ckpt_path=path, verbose=False)[0]["test_loss"]
    assert tested == pytest.approx(trained)


def test_ckpt_path_that_does_not_exist_raises(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        trainer.validate(BoringModule(), loader(8), ckpt_path=str(tmp_path / "nope.ckpt"))


def test_evaluation_after_fit_reuses_the_fitted_model(tmp_path):
    model = BoringModule()
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, loader(32))
    # model=None: the trainer uses the module it just fitted
    assert trainer.test(dataloaders=loader(8), verbose=False)[0]["test_loss"] >= 0
    assert len(trainer.predict(dataloaders=loader(8))) == 1


def test_calling_with_no_model_at_all_is_a_clear_error(tmp_path):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False)
    with pytest.raises(fulmen.errors.FulmenConfigError, match="needs a model"):
        trainer.validate(dataloaders=loader(8))
    with pytest.raises(fulmen.errors.FulmenConfigError, match="fulmen.Module"):
        trainer.fit(torch.nn.Linear(8, 1), loader(8))
