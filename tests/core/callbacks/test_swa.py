"""StochasticWeightAveraging: the final weights are the average of the per-epoch weights over
the SWA epochs, the learning rate follows SWALR, batch-norm statistics are recomputed, bad
settings are refused, and a resumed run ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer
from torch import nn
from torch.optim.swa_utils import update_bn

import fulmen
from fulmen.callbacks import Callback, ModelCheckpoint, StochasticWeightAveraging
from fulmen.errors import FulmenConfigError


class BatchNormModule(BoringModule):
    def __init__(self, lr: float = 0.05, scheduler: bool = False) -> None:
        super().__init__(lr=lr)
        self.scheduler = scheduler
        self.layer = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        if not self.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}


class Snapshots(Callback):
    """The weights and learning rate at each epoch start (listed after SWA: its SWALR is in
    place; the weights are those SWA averages, it adds them to the average without changing them)."""

    def __init__(self) -> None:
        self.weights, self.lrs = {}, []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.weights[trainer.current_epoch] = [p.detach().clone() for p in module.parameters()]
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(tmp_path, callbacks, max_epochs=5, model=None, ckpt_path=None, shuffle=True, **kwargs):
    torch.manual_seed(0)
    model = model or BoringModule()
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False, limit_train_batches=4, **kwargs)
    trainer.fit(model, loader(n=32, batch_size=8, shuffle=shuffle), ckpt_path=ckpt_path)
    return trainer, model


def _running_average(snapshots):
    average = [t.clone() for t in snapshots[0]]
    for n, snapshot in enumerate(snapshots[1:], start=1):
        average = [a + (s - a) / (n + 1) for a, s in zip(average, snapshot)]
    return average


def test_final_weights_are_the_average_of_the_swa_epochs(tmp_path):
    snapshots = Snapshots()
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=3, annealing_epochs=0)
    _, model = _fit(tmp_path, [swa, snapshots], max_epochs=5)
    assert swa.swa_start == 2 and swa.swa_end == 4 and int(swa.n_averaged) == 3
    expected = _running_average([snapshots.weights[e] for e in (2, 3, 4)])
    for param, want in zip(model.parameters(), expected):
        assert torch.equal(param, want)
    plain_mean = [torch.stack(ws).mean(0) for ws in zip(*(snapshots.weights[e] for e in (2, 3, 4)))]
    for param, want in zip(model.parameters(), plain_mean):
        torch.testing.assert_close(param, want)
    assert not torch.equal(list(model.parameters())[0], snapshots.weights[4][0])  # really replaced
    # annealing_epochs=0: the SWA learning rate from the first SWA epoch on.
    assert snapshots.lrs == pytest.approx([0.05, 0.05, 0.01, 0.01, 0.01])


def test_float_start_and_cosine_annealing_replace_the_users_scheduler(tmp_path):
    snapshots = Snapshots()
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=0.5, annealing_epochs=2)
    trainer, _ = _fit(tmp_path, [swa, snapshots], max_epochs=6, model=BatchNormModule(scheduler=True))
    assert swa.swa_start == 2  # int(6 * 0.5) = 3, counted from 1
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, torch.optim.swa_utils.SWALR)
    # StepLR halves 0.05 per epoch until SWA starts; SWALR then anneals (cos) to 0.01 in 2 epochs.
    lr2 = 0.0125  # StepLR stepped twice; SWALR's construction keeps the lr
    lr3 = 0.01 * 0.5 + lr2 * 0.5  # halfway along the cosine
    assert snapshots.lrs == pytest.approx([0.05, 0.025, lr2, lr3, 0.01, 0.01])


def test_batch_norm_statistics_recomputed_for_the_averaged_weights(tmp_path):
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=1)
    trainer, model = _fit(tmp_path, [swa], max_epochs=3, model=BatchNormModule(), shuffle=False)
    bn = model.layer[1]
    assert bn.momentum == 0.1  # restored after the pass
    # The reference: torch's update_bn with the same (averaged) weights over the same batches.
    reference = BatchNormModule()
    reference.load_state_dict(model.state_dict())
    reference.layer[1].running_mean.fill_(5.0)
    limited = [batch for _, batch in zip(range(4), trainer.train_dataloader)]
    update_bn(limited, reference)
    torch.testing.assert_close(bn.running_mean, reference.layer[1].running_mean)
    torch.testing.assert_close(bn.running_var, reference.layer[1].running_var)
    assert trainer.current_epoch == 3  # no extra epoch counted
    assert "train_loss" in trainer.callback_metrics


def test_no_transfer_when_training_stops_before_the_last_epoch(tmp_path):
    snapshots = Snapshots()
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2)
    _, model = _fit(tmp_path, [swa, snapshots], max_epochs=4, max_steps=10)
    assert not torch.equal(list(model.parameters())[0], _running_average([snapshots.weights[1], snapshots.weights[2]])[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(swa_lrs=0), "positive float"), (dict(swa_lrs=[0.1, -1.0]), "positive float"), (dict(swa_lrs="x"), "positive"),
    (dict(swa_lrs=0.1, swa_epoch_start=0), "int >= 1"), (dict(swa_lrs=0.1, swa_epoch_start=1.5), "between 0 and 1"),
    (dict(swa_lrs=0.1, annealing_strategy="exp"), "'cos' or 'linear'"), (dict(swa_lrs=0.1, annealing_epochs=-1), ">= 0"),
    (dict(swa_lrs=0.1, avg_fn=3), "function"), (dict(swa_lrs=0.1, device=3), "torch.device"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(FulmenConfigError, match=match):
        StochasticWeightAveraging(**kwargs)


def test_refused_without_max_epochs_and_with_wrong_lr_count(tmp_path):
    with pytest.raises(FulmenConfigError, match="max_epochs"):
        _fit(tmp_path, [StochasticWeightAveraging(swa_lrs=0.01)], max_epochs=-1, max_steps=4)
    with pytest.raises(FulmenConfigError, match="2 learning rates but the optimizer has 1"):
        _fit(tmp_path, [StochasticWeightAveraging(swa_lrs=[0.01, 0.02], swa_epoch_start=1)], max_epochs=1)


# Inside epoch 1 (the first SWA epoch) / at the end of epoch 2 (SWALR has stepped twice and
# steps on), with the user's StepLR swapped out or no scheduler of the user's.
@pytest.mark.parametrize("step, scheduler", [(6, True), (12, True), (12, False)])
def test_exact_resume(tmp_path, step, scheduler):
    def callbacks():
        return [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=3), ModelCheckpoint(
            dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=step, save_top_k=-1)]

    _, straight = _fit(tmp_path / "a", callbacks(), max_epochs=5, model=BatchNormModule(scheduler=scheduler))
    path = tmp_path / "ckpts" / f"step={step}.ckpt"
    resumed_swa, checkpoint_cb = callbacks()
    trainer, resumed = _fit(tmp_path / "b", [resumed_swa, checkpoint_cb], max_epochs=5,
                            model=BatchNormModule(scheduler=scheduler), ckpt_path=str(path))
    assert int(resumed_swa.n_averaged) == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
