"""How long the fit loop runs and how often it validates and logs."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, StreamDataset, loader, quiet_trainer
from torch.utils.data import DataLoader, IterableDataset

import fulmen
from fulmen.errors import FulmenConfigError, FulmenWarning


class Counter(fulmen.Callback):
    """Counts what the loops did, without touching any of it."""

    def __init__(self):
        self.epochs = []
        self.train_batches = []  # (epoch, batch_idx)
        self.val_runs = []  # global_step at each real validation run
        self.val_batches = 0
        self.sanity_batches = 0
        self.test_batches = 0
        self.predict_batches = 0

    def on_train_epoch_start(self, trainer):
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_end(self, trainer, batch_idx):
        self.train_batches.append((trainer.current_epoch, batch_idx))

    def on_validation_batch_end(self, trainer):
        if trainer.sanity_checking:
            self.sanity_batches += 1
        else:
            self.val_batches += 1

    def on_validation_end(self, trainer):
        if not trainer.sanity_checking:
            self.val_runs.append(trainer.global_step)

    def on_test_batch_end(self):
        self.test_batches += 1

    def on_predict_batch_end(self):
        self.predict_batches += 1


def run_fit(tmp_path, train=None, val=None, model=None, **kwargs):
    counter = Counter()
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("callbacks", [])
    kwargs["callbacks"] = list(kwargs["callbacks"]) + [counter]
    trainer = quiet_trainer(tmp_path, **kwargs)
    trainer.fit(model or BoringModule(), train if train is not None else loader(64), val)
    return trainer, counter


# --------------------------------------------------------------------------- epochs / steps / time


def test_max_epochs(tmp_path):
    trainer, counter = run_fit(tmp_path, max_epochs=3)
    assert counter.epochs == [0, 1, 2]
    assert trainer.current_epoch == 3 and trainer.global_step == 24


class StopAt(fulmen.Callback):
    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer.should_stop = True


def test_should_stop_ends_training_after_the_current_batch(tmp_path):
    trainer, counter = run_fit(tmp_path, max_epochs=5, callbacks=[StopAt(1, 2)])
    assert counter.train_batches[-1] == (1, 2)
    assert trainer.global_step == 8 + 3


def test_min_epochs_overrides_an_early_should_stop(tmp_path):
    trainer, counter = run_fit(tmp_path, max_epochs=10, min_epochs=3, callbacks=[StopAt(0, 0)])
    assert counter.epochs == [0, 1, 2]
    assert trainer.global_step == 24  # every batch of the three epochs ran


def test_min_steps_overrides_an_early_should_stop(tmp_path):
    trainer, _ = run_fit(tmp_path, max_epochs=10, min_steps=5, callbacks=[StopAt(0, 0)])
    assert trainer.global_step == 5


def test_max_steps_stops_mid_epoch_and_wins_over_max_epochs(tmp_path):
    trainer, counter = run_fit(tmp_path, max_epochs=10, max_steps=11)
    assert trainer.global_step == 11
    assert counter.epochs == [0, 1]
    assert counter.train_batches[-1] == (1, 2)


def test_max_steps_alone_sets_no_epoch_limit(tmp_path):
    trainer, counter = run_fit(tmp_path, train=loader(16), max_steps=7)
    assert trainer.global_step == 7 and counter.epochs == [0, 1, 2, 3]


class SlowStep(BoringModule):
    def training_step(self, batch, batch_idx):
        time.sleep(0.05)
        return super().training_step(batch, batch_idx)


def test_max_time_stops_training(tmp_path):
    start = time.monotonic()
    trainer, _ = run_fit(tmp_path, model=SlowStep(), max_epochs=1000, max_time={"seconds": 1})
    elapsed = time.monotonic() - start
    assert elapsed < 5
    # about 20 steps of 50 ms fit in a second; far fewer than 1000 epochs of 8
    assert 5 <= trainer.global_step <= 40
    assert trainer.state == "finished"


def test_max_time_accepts_a_string_and_rejects_garbage(tmp_path):
    trainer = quiet_trainer(tmp_path, max_time="00:00:00:01", logger=False, enable_checkpointing=False)
    timer = trainer._max_time_callback()
    assert timer is not None and timer.duration.total_seconds() == 1
    with pytest.raises(FulmenConfigError, match="not understood"):
        quiet_trainer(tmp_path, max_time="one second")


# --------------------------------------------------------------------------- limit_*_batches


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0.5, 4), (0.01, 1), (1.0, 8), (100, 8)])
def test_limit_train_batches(tmp_path, limit, expected):
    trainer, counter = run_fit(tmp_path, max_epochs=2, limit_train_batches=limit)
    assert trainer.num_training_batches == expected
    assert trainer.global_step == 2 * expected
    assert [b for e, b in counter.train_batches if e == 1] == list(range(expected))


def test_limit_train_batches_zero_skips_training(tmp_path):
    model = BoringModule()
    before = [p.detach().clone() for p in model.parameters()]
    trainer, counter = run_fit(tmp_path, model=model, max_epochs=2, limit_train_batches=0)
    assert trainer.global_step == 0 and counter.train_batches == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(("limit", "expected"), [(2, 2), (0.5, 2), (0.0, 0)])
def test_limit_val_batches(tmp_path, limit, expected):
    _, counter = run_fit(tmp_path, val=loader(32), max_epochs=2, limit_val_batches=limit)
    assert counter.val_batches == 2 * expected
    assert len(counter.val_runs) == (2 if expected else 0)


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0.25, 2), (1.0, 8)])
def test_limit_test_and_predict_batches(tmp_path, limit, expected):
    counter = Counter()
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=[counter],
                            limit_test_batches=limit, limit_predict_batches=limit)
    trainer.test(BoringModule(), loader(64), verbose=False)
    predictions = trainer.predict(BoringModule(), loader(64))
    assert counter.test_batches == expected
    assert counter.predict_batches == expected and len(predictions) == expected


@pytest.mark.parametrize("bad", [1.5, -1, "all"])
def test_bad_limit_is_a_config_error(tmp_path, bad):
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, limit_train_batches=bad)
    with pytest.raises(FulmenConfigError, match="limit_train_batches"):
        trainer.fit(BoringModule(), loader(16))


# --------------------------------------------------------------------------- validation frequency


@pytest.mark.parametrize(("interval", "per_epoch"), [(0.25, 4), (0.5, 2), (1.0, 1), (0.3, 3)])
def test_val_check_interval_fraction(tmp_path, interval, per_epoch):
    # Lightning: validate every int(num_batches * fraction) batches, so 0.3 of 10 batches
    # validates after batches 3, 6 and 9 and not again at batch 10.
    batches = 10 if interval == 0.3 else 8
    trainer, counter = run_fit(tmp_path, train=loader(batches * 8), val=loader(8), max_epochs=2,
                               val_check_interval=interval)
    check_every = max(1, int(batches * interval))
    expected = [epoch * batches + k * check_every for epoch in range(2) for k in range(1, per_epoch + 1)]
    assert counter.val_runs == expected


def test_val_check_interval_int_counts_batches_within_the_epoch(tmp_path):
    # Lightning: every 3rd batch of each epoch; the 8th (last) batch is not a multiple, so no
    # extra run at the epoch end.
    _, counter = run_fit(tmp_path, val=loader(8), max_epochs=2, val_check_interval=3)
    assert counter.val_runs == [3, 6, 11, 14]


def test_val_check_interval_int_across_epochs_with_check_val_every_n_epoch_none(tmp_path):
    _, counter = run_fit(tmp_path, val=loader(8), max_epochs=3, val_check_interval=5, check_val_every_n_epoch=None)
    assert counter.val_runs == [5, 10, 15, 20]


def test_val_check_interval_larger_than_the_epoch_is_refused(tmp_path):
    with pytest.raises(FulmenConfigError, match="check_val_every_n_epoch=None"):
        run_fit(tmp_path, val=loader(8), val_check_interval=20)


def test_check_val_every_n_epoch(tmp_path):
    _, counter = run_fit(tmp_path, val=loader(8), max_epochs=5, check_val_every_n_epoch=2)
    assert counter.val_runs == [16, 32]  # after epochs 1 and 3 (0-based)


def test_early_stop_mid_epoch_runs_one_last_validation(tmp_path):
    # Lightning validates when training stops early through should_stop, so the final state
    # is validated (and checkpointed) even between validation intervals.
    _, counter = run_fit(tmp_path, val=loader(8), max_epochs=5, callbacks=[StopAt(1, 2)])
    assert counter.val_runs == [8, 11]


def test_no_validation_step_means_no_validation(tmp_path):
    class NoVal(BoringModule):
        validation_step = None

    with pytest.warns(fulmen.errors.FulmenWarning, match="no validation_step"):
        _, counter = run_fit(tmp_path, model=NoVal(), val=loader(8), max_epochs=1, num_sanity_val_steps=2)
    assert counter.val_runs == [] and counter.sanity_batches == 0


# --------------------------------------------------------------------------- sanity check


class SanitySpy(fulmen.Callback):
    def __init__(self):
        self.calls = []
        self.metrics_after_sanity = None

    def on_sanity_check_start(self, trainer):
        self.calls.append(("start", trainer.sanity_checking))

    def on_sanity_check_end(self, trainer):
        self.calls.append(("end", trainer.sanity_checking))

    def on_train_start(self, trainer):
        self.metrics_after_sanity = dict(trainer.callback_metrics)
        self.progress_after_sanity = dict(trainer.progress_bar_metrics)
        self.logged_after_sanity = dict(trainer.logged_metrics)


@pytest.mark.parametrize(("steps", "expected"), [(0, 0), (2, 2), (-1, 4), (None, 2)])
def test_num_sanity_val_steps(tmp_path, steps, expected):
    spy = SanitySpy()
    _, counter = run_fit(tmp_path, val=loader(32), max_epochs=1, limit_train_batches=1, callbacks=[spy],
                         num_sanity_val_steps=steps)  # None: the default, 2
    assert counter.sanity_batches == expected
    assert counter.val_batches == 4  # the real validation is not limited by the sanity check
    assert spy.calls == ([("start", True), ("end", True)] if expected else [])


def test_sanity_check_metrics_do_not_leak(tmp_path):
    spy = SanitySpy()
    trainer, _ = run_fit(tmp_path, val=loader(32), max_epochs=1, limit_train_batches=2,
                         num_sanity_val_steps=2, callbacks=[spy], logger=True)
    assert "val_loss" not in spy.metrics_after_sanity
    assert "val_loss" not in spy.progress_after_sanity
    assert "val_loss" not in spy.logged_after_sanity
    assert "val_loss" in trainer.callback_metrics  # the real validation logged it
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    # one validation row only: the sanity check wrote nothing to the logger
    assert sum(1 for r in rows if r.get("val_loss")) == 1


# --------------------------------------------------------------------------- logging cadence


def read_csv(trainer):
    return list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))


def test_log_every_n_steps_in_the_csv_file(tmp_path):
    trainer, _ = run_fit(tmp_path, train=loader(64), max_epochs=2, log_every_n_steps=3, logger=True)
    assert Path(trainer.logger.log_dir) == tmp_path / "fulmen_logs" / "version_0"
    rows = read_csv(trainer)
    step_rows = [int(r["step"]) for r in rows if r["train_loss"]]
    # every 3rd batch over both epochs (3, 6, 9, 12, 15); fulmen also flushes the epoch's
    # last batch (8, 16) so that short epochs are never silent.
    assert step_rows == [3, 6, 8, 9, 12, 15, 16]
    epochs = {int(r["step"]): float(r["epoch"]) for r in rows if r["train_loss"]}
    assert epochs[6] == 0.0 and epochs[9] == 1.0
    assert trainer.logged_metrics["train_loss"] == pytest.approx(float(rows[-1]["train_loss"]))


def test_log_every_n_steps_one_logs_every_step(tmp_path):
    trainer, _ = run_fit(tmp_path, train=loader(32), max_epochs=1, log_every_n_steps=1, logger=True)
    assert [int(r["step"]) for r in read_csv(trainer) if r["train_loss"]] == [1, 2, 3, 4]


def test_log_every_n_steps_counts_optimizer_steps_with_accumulation(tmp_path):
    # 16 micro-batches, 4 per step: 4 optimizer steps; log every 2nd step → steps 2 and 4,
    # one row each (no rows for micro-batches that only accumulated)
    trainer, _ = run_fit(tmp_path, train=loader(128), max_epochs=1, log_every_n_steps=2,
                         accumulate_grad_batches=4, logger=True)
    assert [int(r["step"]) for r in read_csv(trainer) if r["train_loss"]] == [2, 4]


def test_log_every_n_steps_must_be_positive(tmp_path):
    with pytest.raises(FulmenConfigError, match="log_every_n_steps"):
        quiet_trainer(tmp_path, log_every_n_steps=0)


# --------------------------------------------------------------------------- debugging runs


@pytest.mark.parametrize(("value", "batches"), [(True, 1), (3, 3)])
def test_fast_dev_run(tmp_path, value, batches, capsys):
    counter = Counter()
    trainer = quiet_trainer(tmp_path, fast_dev_run=value, max_epochs=50, callbacks=[counter])
    trainer.fit(BoringModule(), loader(64), loader(64))
    assert trainer.global_step == batches and counter.epochs == [0]
    assert counter.val_batches == batches and counter.sanity_batches == 0
    assert trainer.loggers == [] and trainer.checkpoint_callback is None
    assert not (tmp_path / "fulmen_logs").exists()
    trainer.test(BoringModule(), loader(64), verbose=False)
    assert counter.test_batches == batches
    assert not list(tmp_path.rglob("*.ckpt"))


def test_fast_dev_run_rejects_negative(tmp_path):
    with pytest.raises(FulmenConfigError, match="fast_dev_run"):
        quiet_trainer(tmp_path, fast_dev_run=-1)


class BatchRecorder(BoringModule):
    def __init__(self):
        super().__init__()
        self.train_x = []
        self.val_x = []

    def training_step(self, batch, batch_idx):
        self.train_x.append(batch[0].clone())
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.val_x.append(batch[0].clone())
        return super().validation_step(batch, batch_idx)


def test_overfit_batches_repeats_the_same_first_batches(tmp_path):
    model = BatchRecorder()
    shuffled = loader(64, shuffle=True)
    first_two = torch.cat([shuffled.dataset.tensors[0][:8], shuffled.dataset.tensors[0][8:16]])
    trainer, counter = run_fit(tmp_path, model=model, train=shuffled, val=loader(64, seed=5), max_epochs=3,
                               overfit_batches=2)
    assert trainer.global_step == 6
    for epoch in range(3):
        # no shuffling: the same two leading batches every epoch
        assert torch.equal(torch.cat(model.train_x[2 * epoch: 2 * epoch + 2]), first_two)
    # validation uses those training batches too, not the validation loader
    assert counter.val_batches == 6
    assert torch.equal(torch.cat(model.val_x[:2]), first_two)


def test_overfit_batches_fraction(tmp_path):
    trainer, _ = run_fit(tmp_path, train=loader(64), max_epochs=1, overfit_batches=0.25)
    assert trainer.global_step == 2


def test_deterministic_runs_give_identical_parameters(tmp_path, monkeypatch):
    # seed_everything exports its seed; keep it from leaking into other tests
    monkeypatch.delenv("FULMEN_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("FULMEN_SEED_WORKERS", raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # set by deterministic=True
    def train():
        fulmen.seed_everything(7)
        model = BoringModule()
        trainer = quiet_trainer(tmp_path, deterministic=True, max_epochs=2, logger=False, enable_checkpointing=False)
        data = loader(64, shuffle=True, generator=torch.Generator().manual_seed(3))
        trainer.fit(model, data)
        return [p.detach().clone() for p in model.parameters()]

    try:
        first, second = train(), train()
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- iterable data


def test_iterable_dataset_with_max_steps(tmp_path):
    trainer, counter = run_fit(tmp_path, train=DataLoader(StreamDataset(), batch_size=4), max_steps=6)
    assert trainer.global_step == 6
    assert [b for _, b in counter.train_batches] == list(range(6))


def test_iterable_dataset_with_a_batch_count_limit_has_epochs(tmp_path):
    trainer, counter = run_fit(tmp_path, train=DataLoader(StreamDataset(), batch_size=4), val=loader(8),
                               max_epochs=2, limit_train_batches=3)
    assert trainer.global_step == 6 and counter.epochs == [0, 1]
    assert counter.val_runs == [3, 6]


def test_iterable_dataset_without_a_step_limit_ends_each_epoch_when_the_data_does(tmp_path):
    """Lightning's rule (RL on an IterableDataset): no max_steps needed; a warning says that
    an endless stream would need one."""
    with pytest.warns(FulmenWarning, match="ends when its iterator is exhausted"):
        trainer, counter = run_fit(tmp_path, train=DataLoader(FiniteStream(), batch_size=2), max_epochs=2)
    assert counter.epochs == [0, 1]
    assert [b for _, b in counter.train_batches] == [0, 1, 0, 1]
    assert trainer.global_step == 4 and trainer.current_epoch == 2


def test_iterable_fraction_limit_is_a_clear_error(tmp_path):
    with pytest.raises(FulmenConfigError, match="no length"):
        run_fit(tmp_path, train=DataLoader(StreamDataset(), batch_size=4), max_steps=3, limit_train_batches=0.5)


class FiniteStream(IterableDataset):
    """An iterable dataset of 4 samples that does not know its length."""

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):
            x = torch.randn(8, generator=generator)
            yield x, x.sum(dim=0, keepdim=True)


def test_finite_iterable_dataset_ends_its_epoch_and_validates(tmp_path):
    # An unsized epoch ends when the data does; Lightning then validates (is_last_batch).
    trainer, counter = run_fit(tmp_path, train=DataLoader(FiniteStream(), batch_size=2), val=loader(8),
                               max_epochs=3, max_steps=100)
    assert counter.epochs == [0, 1, 2]
    assert trainer.global_step == 6 and trainer.current_epoch == 3
    assert counter.val_runs == [2, 4, 6]


# --------------------------------------------------------------------------- positional DataModule


class _Data(fulmen.DataModule):
    def __init__(self):
        super().__init__()
        self.asked = []

    def train_dataloader(self):
        self.asked.append("train")
        return loader(16)

    def val_dataloader(self):
        self.asked.append("val")
        return loader(8)

    def test_dataloader(self):
        self.asked.append("test")
        return loader(8)

    def predict_dataloader(self):
        self.asked.append("predict")
        return loader(8)


def test_a_datamodule_given_where_the_dataloaders_go_is_used_as_datamodule(tmp_path):
    """``trainer.fit(model, dm)``, ``trainer.test(model, dm)``: Lightning's positional forms."""
    data = _Data()
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, num_sanity_val_steps=0, max_epochs=1)
    model = BoringModule()
    trainer.fit(model, data)
    assert data.asked == ["train", "val"] and trainer.global_step == 2
    assert trainer.datamodule is data
    trainer.validate(model, data)
    trainer.test(model, data)
    predictions = trainer.predict(model, data)
    assert data.asked[2:] == ["val", "test", "predict"] and len(predictions) == 1


def test_a_datamodule_given_twice_is_refused(tmp_path):
    data = _Data()
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, max_epochs=1)
    with pytest.raises(FulmenConfigError, match="both as train_dataloaders and as datamodule="):
        trainer.fit(BoringModule(), data, datamodule=_Data())
    assert data.asked == []
