"""LearningRateMonitor: learning rates land in metrics.csv at the right steps/epochs."""

from __future__ import annotations

import csv

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks import LearningRateMonitor
from fulmen.errors import FulmenConfigError


class StepLRModule(BoringModule):
    def __init__(self, interval: str = "epoch", step_size: int = 1, name=None) -> None:
        super().__init__(lr=0.1)
        self.interval, self.step_size, self.sched_name = interval, step_size, name

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=0.5)
        config = {"scheduler": scheduler, "interval": self.interval}
        if self.sched_name:
            config["name"] = self.sched_name
        return {"optimizer": optimizer, "lr_scheduler": config}


def _rows(trainer):
    trainer.logger.save()
    with open(trainer.logger.metrics_file, newline="") as handle:
        return list(csv.DictReader(handle))


def _logged(rows, key):
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def test_epoch_interval_logs_each_epochs_lr(tmp_path):
    monitor = LearningRateMonitor(logging_interval="epoch")
    trainer = quiet_trainer(tmp_path, max_epochs=3, limit_train_batches=4, callbacks=[monitor])
    trainer.fit(StepLRModule("epoch"), loader())
    rows = _rows(trainer)
    assert _logged(rows, "lr-SGD") == [(0, 0.1), (4, 0.05), (8, 0.025)]
    assert monitor.lrs == {"lr-SGD": [0.1, 0.05, 0.025]}


def test_step_interval_logs_every_step(tmp_path):
    monitor = LearningRateMonitor(logging_interval="step")
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=3, log_every_n_steps=1, callbacks=[monitor])
    trainer.fit(StepLRModule("step", step_size=2), loader())
    logged = _logged(_rows(trainer), "lr-SGD")
    # The lr in effect for each step, logged before the step; halves every 2 steps.
    assert logged == [(s, 0.1 * 0.5 ** (s // 2)) for s in range(6)]


def test_default_interval_follows_the_scheduler_with_momentum_and_weight_decay(tmp_path):
    monitor = LearningRateMonitor(log_momentum=True, log_weight_decay=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3, log_every_n_steps=1, callbacks=[monitor])
    trainer.fit(StepLRModule("step", step_size=1, name="my_lr"), loader())
    rows = _rows(trainer)
    # A named scheduler keeps its name; momentum and weight decay get Lightning's suffixes.
    assert [v for _, v in _logged(rows, "my_lr")] == pytest.approx([0.1, 0.05, 0.025])
    assert [v for _, v in _logged(rows, "my_lr-momentum")] == pytest.approx([0.9, 0.9, 0.9])
    assert [v for _, v in _logged(rows, "my_lr-weight_decay")] == pytest.approx([0.0, 0.0, 0.0])


def test_param_groups_get_suffixes(tmp_path):
    class TwoGroups(BoringModule):
        def configure_optimizers(self):
            return torch.optim.SGD(
                [{"params": [self.layer.weight], "lr": 0.1}, {"params": [self.layer.bias], "lr": 0.01}], lr=0.1
            )

    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[LearningRateMonitor()])
    trainer.fit(TwoGroups(), loader())
    rows = _rows(trainer)
    assert [v for _, v in _logged(rows, "lr-SGD/pg1")] == [0.1]
    assert [v for _, v in _logged(rows, "lr-SGD/pg2")] == [0.01]


def test_without_scheduler_logs_per_epoch(tmp_path):
    monitor = LearningRateMonitor()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, log_every_n_steps=1, callbacks=[monitor])
    trainer.fit(BoringModule(lr=0.03), loader())
    assert [v for _, v in _logged(_rows(trainer), "lr-SGD")] == pytest.approx([0.03, 0.03])


def test_needs_a_logger(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, logger=False, callbacks=[LearningRateMonitor()])
    with pytest.raises(FulmenConfigError, match="needs a logger"):
        trainer.fit(BoringModule(), loader())


def test_invalid_interval():
    with pytest.raises(FulmenConfigError, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")
