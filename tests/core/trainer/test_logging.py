"""``self.log``: defaults by hook, suffixes, reductions, where values end up, bad values."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


def trainer_for(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("log_every_n_steps", 1)
    return quiet_trainer(tmp_path, **kwargs)


class Logs(BoringModule):
    """Logs the batch index in every hook it is asked to, with the given options."""

    def __init__(self, train=None, val=None, epoch_end=None):
        super().__init__()
        self.train_opts, self.val_opts, self.epoch_end_opts = train, val, epoch_end

    def training_step(self, batch, batch_idx):
        if self.train_opts is not None:
            self.log("value", float(batch_idx), **self.train_opts)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if self.val_opts is not None:
            self.log("v", float(batch_idx), **self.val_opts)

    def on_train_epoch_end(self):
        if self.epoch_end_opts is not None:
            self.log("epoch_value", 10.0 + self.current_epoch, **self.epoch_end_opts)


def test_training_step_defaults_to_on_step_only(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Logs(train={}), loader(32))  # batches 0..3
    assert trainer.callback_metrics["value"].item() == 3.0  # the last step, not a mean
    assert "value_epoch" not in trainer.callback_metrics and "value_step" not in trainer.callback_metrics
    assert trainer.logged_metrics["value"] == 3.0
    assert "value_epoch" not in trainer.logged_metrics


def test_validation_step_defaults_to_on_epoch_only(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Logs(val={}), loader(32), loader(32))  # 4 val batches of 8
    assert trainer.callback_metrics["v"].item() == pytest.approx(1.5)
    assert trainer.logged_metrics["v"] == pytest.approx(1.5)
    assert "v_step" not in trainer.logged_metrics and "v_epoch" not in trainer.logged_metrics


def test_on_train_epoch_end_defaults_to_on_epoch(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=2)
    trainer.fit(Logs(epoch_end={}), loader(16))
    assert trainer.callback_metrics["epoch_value"].item() == 11.0
    assert trainer.logged_metrics["epoch_value"] == 11.0


def test_on_step_and_on_epoch_fork_the_name(tmp_path):
    seen = {}

    class Spy(fulmen.Callback):
        def on_train_batch_end(self, trainer, batch_idx):
            if batch_idx == 1:
                seen["mid"] = dict(trainer.callback_metrics)

    trainer = trainer_for(tmp_path, max_epochs=1, callbacks=[Spy()])
    trainer.fit(Logs(train={"on_step": True, "on_epoch": True, "prog_bar": True}), loader(32))
    # during the epoch: the step value under both the plain and the _step name
    assert seen["mid"]["value"].item() == 1.0 and seen["mid"]["value_step"].item() == 1.0
    # after the epoch: the plain name holds the epoch mean
    assert trainer.callback_metrics["value_epoch"].item() == pytest.approx(1.5)
    assert trainer.callback_metrics["value"].item() == pytest.approx(1.5)
    assert trainer.logged_metrics["value_step"] == 3.0
    assert trainer.logged_metrics["value_epoch"] == pytest.approx(1.5)
    assert "value" not in trainer.logged_metrics
    # Lightning's progress bar shows both forked names
    assert trainer.progress_bar_metrics["value_step"] == 3.0
    assert trainer.progress_bar_metrics["value_epoch"] == pytest.approx(1.5)
    assert "value" not in trainer.progress_bar_metrics


def test_on_step_false_in_training_gives_only_the_epoch_value(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Logs(train={"on_step": False, "on_epoch": True}), loader(32))
    assert trainer.callback_metrics["value"].item() == pytest.approx(1.5)
    assert trainer.logged_metrics["value"] == pytest.approx(1.5)
    assert not any(k.endswith("_step") or k.endswith("_epoch") for k in trainer.callback_metrics if k.startswith("value"))


def test_on_step_true_in_validation_is_reduced_per_epoch(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Logs(val={"on_step": True}), loader(16), loader(32))
    assert trainer.callback_metrics["v"].item() == pytest.approx(1.5)


def test_logging_nothing_is_refused(tmp_path):
    with pytest.raises(FulmenConfigError, match="records nothing"):
        trainer_for(tmp_path, max_epochs=1).fit(Logs(train={"on_step": False, "on_epoch": False}), loader(16))


@pytest.mark.parametrize(
    ("reduce_fx", "expected"),
    [("mean", (0 * 8 + 1 * 8 + 2 * 4) / 20), ("sum", 3.0), ("max", 2.0), ("min", 0.0),
     (torch.sum, 3.0), (torch.max, 2.0)],
)
def test_reduce_fx_over_batches_of_unequal_size(tmp_path, reduce_fx, expected):
    trainer = trainer_for(tmp_path)
    result = trainer.validate(Logs(val={"reduce_fx": reduce_fx}), loader(20, batch_size=8), verbose=False)
    assert result[0]["v"] == pytest.approx(expected)
    assert trainer.callback_metrics["v"].item() == pytest.approx(expected)


def test_explicit_batch_size_weights_the_mean(tmp_path):
    class Weighted(BoringModule):
        def validation_step(self, batch, batch_idx):
            self.log("w", float(batch_idx), batch_size=1 if batch_idx == 0 else 3)

    trainer = trainer_for(tmp_path)
    result = trainer.validate(Weighted(), loader(16), verbose=False)
    assert result[0]["w"] == pytest.approx((0 * 1 + 1 * 3) / 4)


def test_unknown_reduce_fx_is_refused(tmp_path):
    with pytest.raises(FulmenConfigError, match="reduce_fx"):
        trainer_for(tmp_path).validate(Logs(val={"reduce_fx": "median"}), loader(8))


def test_prog_bar_and_logger_flags(tmp_path):
    class Flags(BoringModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("shown", 1.0, prog_bar=True)
            self.log("hidden", 2.0, logger=False)
            return loss

    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Flags(), loader(16), loader(8))
    assert trainer.progress_bar_metrics["shown"] == 1.0
    assert "hidden" not in trainer.progress_bar_metrics
    assert "hidden" not in trainer.logged_metrics and trainer.callback_metrics["hidden"].item() == 2.0
    assert trainer.logged_metrics["shown"] == 1.0
    # BoringModule logs val_loss with prog_bar=True in validation
    assert "val_loss" in trainer.progress_bar_metrics
    assert isinstance(trainer.progress_bar_metrics["val_loss"], float)
    assert isinstance(trainer.callback_metrics["val_loss"], torch.Tensor)


def test_log_dict(tmp_path):
    class Many(BoringModule):
        def validation_step(self, batch, batch_idx):
            self.log_dict({"a": 1.0, "b": torch.tensor(2.0)}, prog_bar=True)

    trainer = trainer_for(tmp_path)
    assert trainer.validate(Many(), loader(8), verbose=False) == [{"a": 1.0, "b": 2.0}]
    assert trainer.progress_bar_metrics == {"a": 1.0, "b": 2.0}


class TwoLoaders(BoringModule):
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        self.log("val_loss", float(dataloader_idx) + 1.0)
        self.log("shared", 5.0, add_dataloader_idx=False)


def test_multiple_val_dataloaders_suffix_the_names(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(TwoLoaders(), loader(16), [loader(8), loader(16)])
    assert trainer.callback_metrics["val_loss/dataloader_idx_0"].item() == 1.0
    assert trainer.callback_metrics["val_loss/dataloader_idx_1"].item() == 2.0
    assert "val_loss" not in trainer.callback_metrics
    assert trainer.callback_metrics["shared"].item() == 5.0

    result = trainer.validate(TwoLoaders(), [loader(8), loader(16)], verbose=False)
    assert result == [
        {"val_loss/dataloader_idx_0": 1.0, "shared": 5.0},
        {"val_loss/dataloader_idx_1": 2.0, "shared": 5.0},
    ]


def test_test_with_multiple_dataloaders_passes_dataloader_idx(tmp_path):
    seen = []

    class Indexed(BoringModule):
        def test_step(self, batch, batch_idx, dataloader_idx=0):
            seen.append(dataloader_idx)
            self.log("n", float(batch[0].shape[0]))

    result = trainer_for(tmp_path).test(Indexed(), [loader(8), loader(4, batch_size=4)], verbose=False)
    assert seen == [0, 1]
    assert result == [{"n/dataloader_idx_0": 8.0}, {"n/dataloader_idx_1": 4.0}]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(torch.ones(3), r"shape \(3,\)"), ("high", "got a str"), ([1.0], "got a list"), (None, "got a NoneType")],
)
def test_logging_a_bad_value_is_a_clear_error(tmp_path, value, fragment):
    class Bad(BoringModule):
        def training_step(self, batch, batch_idx):
            self.log("bad", value)
            return super().training_step(batch, batch_idx)

    with pytest.raises(FulmenUserCodeError, match=fragment) as info:
        trainer_for(tmp_path, max_epochs=1).fit(Bad(), loader(8))
    assert "self.log('bad')" in str(info.value)


def test_logging_numbers_and_one_element_tensors(tmp_path):
    class Kinds(BoringModule):
        def validation_step(self, batch, batch_idx):
            self.log("int", 3)
            self.log("one", torch.tensor([[4.0]]))
            self.log("long", torch.tensor(5))

    result = trainer_for(tmp_path).validate(Kinds(), loader(8), verbose=False)[0]
    assert result == {"int": 3.0, "one": 4.0, "long": 5.0}


def test_log_outside_a_trainer_is_a_clear_error():
    with pytest.raises(FulmenConfigError, match="not attached to a Trainer"):
        BoringModule().log("x", 1.0)


def test_epoch_values_restart_each_epoch(tmp_path):
    class PerEpoch(BoringModule):
        def training_step(self, batch, batch_idx):
            self.log("e", float(self.current_epoch), on_step=False, on_epoch=True, reduce_fx="sum")
            return super().training_step(batch, batch_idx)

    seen = []

    class Spy(fulmen.Callback):
        def on_train_epoch_end(self, trainer):
            seen.append(trainer.callback_metrics["e"].item())

    trainer_for(tmp_path, max_epochs=3, callbacks=[Spy()]).fit(PerEpoch(), loader(16))
    assert seen == [0.0, 2.0, 4.0]  # two batches per epoch, summed, not carried over
