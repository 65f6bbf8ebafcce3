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


def _device_logging(device: str, tmp_path):
    recorder = RowRecorder()
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[recorder])
    fabric.log_flush_every = 4
    for step in range(3):
        fabric.log_dict({"loss": torch.tensor(float(step), device=device), "lr": 0.5}, step=step)
    pending = list(recorder.rows)
    fabric.log("acc", 0.25, step=3)  # the fourth row: the interval is reached
    return recorder, pending, fabric


def test_cpu_values_reach_the_loggers_at_once_as_floats(tmp_path):
    recorder, pending, _ = _device_logging("cpu", tmp_path)
    assert [step for step, _ in pending] == [0, 1, 2]  # reading a CPU tensor costs no sync
    assert recorder.rows[2] == (2, {"loss": 2.0, "lr": 0.5}) and recorder.rows[3] == (3, {"acc": 0.25})
    assert all(type(v) is float for _, row in recorder.rows for v in row.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_values_wait_for_the_interval_then_arrive_in_order(tmp_path):
    recorder, pending, fabric = _device_logging("cuda", tmp_path)
    assert pending == []  # three device rows: nothing read yet, no sync
    assert [step for step, _ in recorder.rows] == [0, 1, 2, 3]
    fabric.log("loss", torch.tensor(9.0, device="cuda"), step=4)
    assert len(recorder.rows) == 4
    assert fabric.logger is recorder and recorder.rows[-1] == (4, {"loss": 9.0})


def test_rows_are_read_together_in_logged_order():
    from fulmen.fabric.deferred_metrics import _to_floats

    rows = [(0, {"a": torch.tensor(1.0), "b": 2.0}), (None, {"a": torch.tensor(3, dtype=torch.int64)}), (5, {"c": torch.tensor(0.5)})]
    assert _to_floats(rows) == [(0, {"a": 1.0, "b": 2.0}), (None, {"a": 3.0}), (5, {"c": 0.5})]


def test_saving_hands_over_what_was_logged_before(tmp_path):
    recorder = RowRecorder()
    fabric = fulmen.Fabric(accelerator="cpu", loggers=[recorder])
    fabric.log("loss", torch.tensor(2.5), step=1)
    fabric.save(tmp_path / "state.ckpt", {"step": 1})
    assert recorder.rows == [(1, {"loss": 2.5})]


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


def test_call_gives_var_keyword_callbacks_everything_and_accepts_static_and_instance_callables():
    seen = []

    class Everything:
        def on_end(self, **kwargs):
            seen.append(("everything", kwargs))

    class Static:
        @staticmethod
        def on_end(loss):
            seen.append(("static", loss))

    plain = type("Plain", (), {})()
    plain.on_end = lambda epoch: seen.append(("assigned", epoch))

    fabric = fulmen.Fabric(accelerator="cpu", callbacks=[Everything(), Static(), plain])
    fabric.call("on_end", loss=1.0, epoch=3)
    assert seen == [("everything", {"loss": 1.0, "epoch": 3}), ("static", 1.0), ("assigned", 3)]


def test_the_same_callback_twice_is_a_clear_error():
    class Once:
        def on_end(self):
            pass

    callback = Once()
    fabric = fulmen.Fabric(accelerator="cpu", callbacks=[callback, callback])
    with pytest.raises(fulmen.errors.FulmenConfigError, match="appears twice"):
        fabric.call("on_end")


def test_a_device_value_changed_in_place_after_logging_is_logged_as_it_was():
    from fulmen.fabric.deferred_metrics import DeferredMetrics

    recorder = RowRecorder()
    deferred = DeferredMetrics([recorder], flush_every=10)
    total = torch.zeros((), device="meta")  # not a CPU tensor, like a GPU one: kept unread
    deferred.add({"total": total}, step=0)
    assert deferred._rows[0][1]["total"] is not total  # a copy went into the row
    deferred._rows.clear()
