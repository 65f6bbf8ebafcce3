"""The Trainer and Module members Lightning programs read, checked inside real CPU runs:
trainer.state's fn/stage/status, testing/predicting/interrupted, num_devices/device_ids/
num_nodes; Module.global_rank/local_rank/logger/loggers/on_gpu/example_input_array/
freeze/unfreeze/all_gather."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

from fulmen.errors import FulmenConfigError
from fulmen.trainer.states import RunningStage, TrainerFn, TrainerStatus


def _view(trainer) -> tuple:
    state = trainer.state
    return (str(state), state.fn, state.stage, state.status,
            trainer.training, trainer.validating, trainer.testing, trainer.predicting, trainer.sanity_checking)


class Recorder(BoringModule):
    """Records what the Trainer says about itself from inside each step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = {}

    def _record(self, where: str) -> None:
        self.seen.setdefault(where, set()).add(_view(self.trainer))

    def training_step(self, batch, batch_idx):
        self._record("train")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self._record("sanity" if self.trainer.sanity_checking else "validate")
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self._record("test")
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        self._record("predict")
        return super().predict_step(batch, batch_idx)


RUNNING = TrainerStatus.RUNNING


def test_trainer_state_fn_stage_and_status_follow_each_loop(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=1,
                            logger=False, enable_checkpointing=False)
    assert trainer.state == "initializing"
    assert trainer.state.status == TrainerStatus.INITIALIZING and trainer.state.fn is None and trainer.state.stage is None

    model = Recorder()
    trainer.fit(model, loader(), loader(16))
    fit_fn = TrainerFn.FITTING
    assert model.seen["sanity"] == {("fitting", fit_fn, RunningStage.SANITY_CHECKING, RUNNING, False, False, False, False, True)}
    assert model.seen["train"] == {("fitting", fit_fn, RunningStage.TRAINING, RUNNING, True, False, False, False, False)}
    assert model.seen["validate"] == {("fitting", fit_fn, RunningStage.VALIDATING, RUNNING, False, True, False, False, False)}
    assert trainer.state == "finished" and trainer.state.finished and not trainer.interrupted
    assert trainer.state.status == TrainerStatus.FINISHED and trainer.state.stage is None
    assert trainer.state.fn == "fit"  # the last entry point stays readable, as in Lightning

    model.seen.clear()
    trainer.validate(model, loader(16))
    trainer.test(model, loader(16))
    trainer.predict(model, loader(16))
    assert model.seen["validate"] == {("validating", TrainerFn.VALIDATING, RunningStage.VALIDATING, RUNNING, False, True, False, False, False)}
    assert model.seen["test"] == {("testing", TrainerFn.TESTING, RunningStage.TESTING, RUNNING, False, False, True, False, False)}
    assert model.seen["predict"] == {("predicting", TrainerFn.PREDICTING, RunningStage.PREDICTING, RUNNING, False, False, False, True, False)}
    assert trainer.state.fn == "predict" and trainer.state.finished


class Fails(BoringModule):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("broken step")


def test_a_failed_run_reads_as_interrupted(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(RuntimeError, match="broken step"):
        trainer.fit(Fails(), loader())
    assert trainer.state == "failed" and trainer.interrupted
    assert trainer.state.status == TrainerStatus.INTERRUPTED and not trainer.state.finished


def test_device_counts_of_a_cpu_trainer(tmp_path):
    trainer = quiet_trainer(tmp_path, devices=1, logger=False)
    assert trainer.num_devices == 1 and trainer.device_ids == [0] and trainer.num_nodes == 1


# ------------------------------------------------------------------ Module members
class Members(BoringModule):
    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = torch.zeros(2, 8)
        self.seen = {}

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        gathered = self.all_gather({"loss": loss.detach(), "n": torch.tensor([batch_idx, 1])})
        self.seen = {
            "ranks": (self.global_rank, self.local_rank),
            "logger": self.logger,
            "loggers": self.loggers,
            "gathered": {k: v.clone() for k, v in gathered.items()},
            "loss": loss.detach().clone(),
            "on_gpu": self.on_gpu,
        }
        return loss


def test_module_members_inside_a_run(tmp_path):
    model = Members()
    assert (model.global_rank, model.local_rank, model.logger, model.loggers) == (0, 0, None, [])
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, enable_checkpointing=False)
    trainer.fit(model, loader())
    seen = model.seen
    assert seen["ranks"] == (0, 0) and seen["on_gpu"] is False
    assert seen["logger"] is trainer.logger is not None and seen["loggers"] == trainer.loggers
    # one process: its own values under a new first dimension of size 1
    assert torch.equal(seen["gathered"]["loss"], seen["loss"].unsqueeze(0))
    assert seen["gathered"]["n"].tolist() == [[0, 1]]
    with pytest.raises(FulmenConfigError, match="group="):
        model.all_gather(torch.ones(1), group=object())


def test_example_input_array_is_a_plain_attribute_not_model_state():
    model = Members()
    assert torch.equal(model.example_input_array, torch.zeros(2, 8))
    assert "example_input_array" not in model.state_dict() and "_example_input_array" not in model.state_dict()
    assert not any(b is model.example_input_array for b in model.buffers())
    assert BoringModule().example_input_array is None


def test_freeze_stops_training_and_unfreeze_restores_it():
    model = BoringModule()
    model.freeze()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    out = model(torch.randn(4, 8)).sum()
    assert not out.requires_grad  # nothing left to train
    model.unfreeze()
    assert model.training and all(p.requires_grad for p in model.parameters())
    model(torch.randn(4, 8)).sum().backward()
    assert model.layer.weight.grad is not None
