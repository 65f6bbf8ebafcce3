"""Mistakes in user code get errors that say what is wrong and where."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


def trainer_for(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("max_epochs", 1)
    return quiet_trainer(tmp_path, **kwargs)


class Returns(BoringModule):
    def __init__(self, make):
        super().__init__()
        self._make = make

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return self._make(loss, batch_idx)


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda loss, i: "loss", ["returned a str", "loss tensor", "None to skip"]),
        (lambda loss, i: 1.5, ["returned a float"]),
        (lambda loss, i: {"los": loss}, ["without a 'loss' key", "['los']"]),
        (lambda loss, i: {"loss": 0.5}, ["loss is a float, not a tensor"]),
        (lambda loss, i: loss.detach(), ["does not require grad", ".detach()"]),
        (lambda loss, i: loss.item(), ["returned a float"]),
        (lambda loss, i: loss * torch.ones(3), [r"shape \(3,\)", "scalar"]),
    ],
)
def test_bad_training_step_outputs(tmp_path, make, fragments):
    with pytest.raises(FulmenUserCodeError) as info:
        trainer_for(tmp_path).fit(Returns(make), loader(16))
    for fragment in fragments:
        assert re.search(fragment, str(info.value)), (fragment, str(info.value))


def test_a_dict_with_loss_and_extras_is_fine_and_reaches_on_train_batch_end(tmp_path):
    collected = []

    class Collect(fulmen.Callback):
        def on_train_batch_end(self, outputs):
            collected.append(outputs)

    trainer = trainer_for(tmp_path, callbacks=[Collect()])
    trainer.fit(Returns(lambda loss, i: {"loss": loss, "extra": i}), loader(16))
    assert trainer.global_step == 2
    assert [o["extra"] for o in collected] == [0, 1]
    assert all(not o["loss"].requires_grad for o in collected)  # detached for callbacks


def test_training_step_returning_none_skips_the_step(tmp_path):
    model = Returns(lambda loss, i: None if i % 2 else loss)
    trainer = trainer_for(tmp_path, max_epochs=2)
    trainer.fit(model, loader(32))  # 4 batches, two of them skipped, per epoch
    assert trainer.global_step == 4


def test_training_step_returning_none_always_leaves_the_weights_alone(tmp_path):
    model = Returns(lambda loss, i: None)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = trainer_for(tmp_path)
    trainer.fit(model, loader(32))
    assert trainer.global_step == 0 and trainer.current_epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_empty_train_dataloader(tmp_path):
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, 1)), batch_size=4)
    with pytest.raises(FulmenUserCodeError, match=r"train dataloader yields no batches \(dataset of 0 samples"):
        trainer_for(tmp_path).fit(BoringModule(), empty)


def test_drop_last_leaving_nothing_is_explained(tmp_path):
    short = DataLoader(TensorDataset(torch.zeros(3, 8), torch.zeros(3, 1)), batch_size=4, drop_last=True)
    with pytest.raises(FulmenUserCodeError, match="drop_last=True"):
        trainer_for(tmp_path).fit(BoringModule(), short)


def test_no_training_data_at_all(tmp_path):
    with pytest.raises(FulmenConfigError, match="no training data"):
        trainer_for(tmp_path).fit(BoringModule())


def test_training_data_from_the_module_methods(tmp_path):
    class WithData(BoringModule):
        def train_dataloader(self):
            return loader(16)

        def val_dataloader(self):
            return loader(8)

    trainer = trainer_for(tmp_path)
    trainer.fit(WithData())
    assert trainer.global_step == 2 and "val_loss" in trainer.callback_metrics


class NanAt(BoringModule):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.at:
            loss = loss * float("nan")
        return loss


def test_detect_anomaly_names_epoch_and_step(tmp_path):
    trainer = trainer_for(tmp_path, detect_anomaly=True, max_epochs=2)
    with pytest.raises(FloatingPointError) as info:
        trainer.fit(NanAt(at=5), loader(32))  # step 5 is epoch 1, batch 1
    message = str(info.value)
    assert "nan" in message and "epoch 1" in message and "global step 5" in message and "batch 1" in message
    assert isinstance(info.value, fulmen.errors.FulmenError)
    assert trainer.state == "failed"


def test_without_detect_anomaly_a_nan_loss_trains_on(tmp_path):
    trainer = trainer_for(tmp_path, max_epochs=2)
    trainer.fit(NanAt(at=5), loader(32))
    assert trainer.global_step == 8


def test_on_exception_sees_the_error(tmp_path):
    seen = []

    class Spy(fulmen.Callback):
        def on_exception(self, trainer, exception):
            seen.append((trainer.state, type(exception).__name__))

        def teardown(self, stage):
            seen.append(("teardown", stage))

    with pytest.raises(FulmenUserCodeError):
        trainer_for(tmp_path, callbacks=[Spy()]).fit(Returns(lambda loss, i: "x"), loader(16))
    assert seen == [("failed", "FulmenUserCodeError"), ("teardown", "fit")]


def test_a_hook_with_an_unknown_argument_is_named(tmp_path):
    class Wrong(fulmen.Callback):
        def on_train_batch_end(self, trainer, loss):
            pass

    with pytest.raises(FulmenUserCodeError, match=r"callback .*Wrong.on_train_batch_end cannot be called: its argument\(s\) \['loss'\] are not documented names"):
        trainer_for(tmp_path, callbacks=[Wrong()]).fit(BoringModule(), loader(16))


def test_the_same_callback_twice_is_refused(tmp_path):
    callback = fulmen.Callback()
    with pytest.raises(FulmenConfigError, match="appears twice"):
        trainer_for(tmp_path, callbacks=[callback, callback]).fit(BoringModule(), loader(16))
