"""GradientAccumulationScheduler: real optimizer steps per epoch follow the schedule; bad
settings and unsupported combinations are refused; exact resume mid-epoch."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks import Callback, GradientAccumulationScheduler, ModelCheckpoint
from fulmen.errors import FulmenConfigError
from fulmen.strategies.single_device import SingleDeviceStrategy


class StepCounter(Callback):
    """Counts the optimizer's real steps per epoch (a hook on torch's step, not the Trainer's counter)."""

    def __init__(self) -> None:
        self.per_epoch = {}
        self._epoch = 0

    def on_train_start(self, trainer) -> None:
        optimizer = trainer.optimizers[0].optimizer
        optimizer.register_step_post_hook(lambda *_: self.per_epoch.__setitem__(self._epoch, self.per_epoch.get(self._epoch, 0) + 1))

    def on_train_epoch_start(self, trainer) -> None:
        self._epoch = trainer.current_epoch


def _fit(tmp_path, callbacks, max_epochs=5, model=None, ckpt_path=None, **kwargs):
    torch.manual_seed(0)
    model = model or BoringModule()
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False, **kwargs)
    trainer.fit(model, loader(n=64, batch_size=8), ckpt_path=ckpt_path)  # 8 batches an epoch
    return trainer, model


def test_optimizer_steps_per_epoch_follow_schedule(tmp_path):
    counter = StepCounter()
    scheduler = GradientAccumulationScheduler({1: 4, 3: 3})
    trainer, _ = _fit(tmp_path, [scheduler, counter])
    # Epoch 0 gets the implied 1; 3 over 8 batches steps at 3, 6 and the last batch.
    assert counter.per_epoch == {0: 8, 1: 2, 2: 2, 3: 3, 4: 3}
    assert trainer.global_step == 18
    assert scheduler.scheduling == {1: 4, 3: 3, 0: 1}
    assert trainer.accumulate_grad_batches == 1  # the Trainer's own setting is back after fit
    trainer.fit(trainer.lightning_module, loader())  # and a second fit is not refused


def test_gradients_are_averaged_over_the_window(tmp_path):
    # Accumulating 2 batches of 8 with the loss divided by 2 equals one step on the 16 samples.
    _, scheduled = _fit(tmp_path / "a", [GradientAccumulationScheduler({0: 2})], max_epochs=1)
    torch.manual_seed(0)
    plain = BoringModule()
    trainer = quiet_trainer(tmp_path / "b", max_epochs=1, logger=False)
    trainer.fit(plain, loader(n=64, batch_size=16))
    for a, b in zip(scheduled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


def test_lookup():
    scheduler = GradientAccumulationScheduler({0: 1, 2: 5, 10: 2})
    assert [scheduler.get_accumulate_grad_batches(e) for e in (0, 1, 2, 9, 10, 50)] == [1, 1, 5, 5, 2, 2]
    assert scheduler.going_to_accumulate_grad_batches()
    assert not GradientAccumulationScheduler({0: 1}).going_to_accumulate_grad_batches()


@pytest.mark.parametrize("scheduling, match", [
    ({}, "non-empty dict"), ([(0, 2)], "non-empty dict"), ({-1: 2}, "epochs must be integers >= 0"),
    ({0.5: 2}, "epochs must be"), ({0: 0}, "factors must be integers >= 1"), ({1: 1.5}, "factors must be"),
])
def test_bad_schedules_are_refused(scheduling, match):
    with pytest.raises(FulmenConfigError, match=match):
        GradientAccumulationScheduler(scheduling)


def test_refused_together_with_trainer_accumulate_grad_batches(tmp_path):
    with pytest.raises(FulmenConfigError, match="both set the accumulation"):
        _fit(tmp_path, [GradientAccumulationScheduler({0: 2})], accumulate_grad_batches=4)


def test_refused_under_manual_optimization(tmp_path):
    class Manual(BoringModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            optimizer = self.optimizers()
            loss = super().training_step(batch, batch_idx)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    with pytest.raises(FulmenConfigError, match="manual optimization"):
        _fit(tmp_path, [GradientAccumulationScheduler({0: 2})], model=Manual())


def test_refused_by_a_strategy_with_fixed_accumulation(tmp_path):
    class FixedAccumulation(SingleDeviceStrategy):
        supports_accumulation_schedule = False

    strategy = FixedAccumulation(device=torch.device("cpu"))
    with pytest.raises(FulmenConfigError, match="FixedAccumulation fixes accumulate_grad_batches"):
        _fit(tmp_path, [GradientAccumulationScheduler({0: 2})], strategy=strategy)


def test_exact_resume_mid_epoch(tmp_path):
    def callbacks():
        return [GradientAccumulationScheduler({0: 2, 2: 4}), ModelCheckpoint(
            dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=9, save_top_k=-1)]

    _, straight = _fit(tmp_path / "a", callbacks(), max_epochs=4)
    # Step 9: epochs 0-1 take 4 steps each, so step 9 is inside epoch 2 (accumulating 4).
    counter = StepCounter()
    trainer, resumed = _fit(tmp_path / "b", [*callbacks(), counter], max_epochs=4, ckpt_path=str(tmp_path / "ckpts" / "step=9.ckpt"))
    assert trainer.global_step == 4 + 4 + 2 + 2
    assert counter.per_epoch == {2: 1, 3: 2}
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
