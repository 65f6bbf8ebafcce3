"""Fabric's own services: ``log`` keeps tensors unread until an interval (no host sync
per call) yet delivers every row in order; ``call`` goes through pluggy with the
any-subset argument rule of the Trainer's hooks."""

from __future__ import annotations

import pytest
import torch

import fulmen
from fulmen.errors import FulmenUserCodeError


class RowRecorder:
    """A logger that keeps what it receives."""

    def __init__(self) -> None:
        self.rows = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params):
        pass


def test_log_keeps_tensors_until_the_interval_then_delivers_every_row_in_order():
    recorder = RowRecorder()
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[recorder])
    fabric.log_flush_every = 4
    for step in range(3):
        fabric.log_dict({"loss": torch.tensor(float(step)), "lr": 0.5}, step=step)
    assert recorder.rows == []  # three tensor rows are pending: nothing was read yet
    fabric.log("acc", 0.25, step=3)  # a plain number waits behind them (order is kept)
    assert [step for step, _ in recorder.rows] == [0, 1, 2, 3]
    assert recorder.rows[2] == (2, {"loss": 2.0, "lr": 0.5}) and recorder.rows[3] == (3, {"acc": 0.25})
    assert all(isinstance(v, float) for _, row in recorder.rows for v in row.values())


def test_reaching_the_logger_or_saving_hands_over_pending_rows(tmp_path):
    recorder = RowRecorder()
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[recorder])
    fabric.log("loss", torch.tensor(1.5), step=0)
    assert recorder.rows == []
    assert fabric.logger is recorder and recorder.rows == [(0, {"loss": 1.5})]
    fabric.log("loss", torch.tensor(2.5), step=1)
    fabric.save(tmp_path / "state.ckpt", {"step": 1})
    assert recorder.rows[-1] == (1, {"loss": 2.5})


def test_plain_numbers_with_nothing_pending_go_out_at_once():
    recorder = RowRecorder()
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[recorder])
    fabric.log("lr", 0.1, step=0)
    assert recorder.rows == [(0, {"lr": 0.1})]


def test_log_refuses_a_tensor_that_is_not_a_scalar():
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[RowRecorder()])
    with pytest.raises(FulmenUserCodeError, match="shape"):
        fabric.log("loss", torch.ones(3))


def test_call_passes_each_callback_the_arguments_it_names_in_list_order():
    seen = []

    class OnlyLoss:
        def on_train_epoch_end(self, loss):
            seen.append(("only_loss", loss))

    class Both:
        def on_train_epoch_end(self, loss, epoch):
            seen.append(("both", loss, epoch))

    class Neither:
        def on_train_epoch_end(self):
            seen.append(("neither",))

        def unrelated(self):
            raise AssertionError("not called")

    fabric = fulmen.Fabric(accelerator="cpu", callbacks=[OnlyLoss(), Both(), Neither()])
    fabric.call("on_train_epoch_end", loss=0.5, epoch=2)
    assert seen == [("only_loss", 0.5), ("both", 0.5, 2), ("neither",)]
    fabric.call("a_hook_nobody_implements", x=1)  # no callback: nothing happens


def test_call_with_a_missing_argument_names_the_hook():
    class WantsEpoch:
        def on_validation_end(self, epoch):
            pass

    fabric = fulmen.Fabric(accelerator="cpu", callbacks=[WantsEpoch()])
    with pytest.raises(FulmenUserCodeError, match="on_validation_end"):
        fabric.call("on_validation_end", loss=1.0)


def test_call_with_positional_arguments_passes_them_as_given():
    seen = []

    class Positional:
        def on_step(self, fabric, value):
            seen.append(value)

    fabric = fulmen.Fabric(accelerator="cpu", callbacks=[Positional()])
    fabric.call("on_step", fabric, 7)
    assert seen == [7]
