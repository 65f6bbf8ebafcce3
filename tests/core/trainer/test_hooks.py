"""Hook order, argument subsets, callbacks-before-module, per-trainer callbacks."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen import hookspecs

HOOKS = list(hookspecs.LIFECYCLE_HOOKS)


def _callback_method(name, log):
    def method(self, trainer):
        log.append(f"Callback.{name}")

    method.__name__ = name
    return method


def _module_method(name, log):
    def method(self):
        log.append(f"Module.{name}")

    method.__name__ = name
    return method


def recording_pair(log):
    """A callback and a module that append every lifecycle hook they receive to ``log``."""
    callback_cls = type("RecordingCallback", (fulmen.Callback,), {n: _callback_method(n, log) for n in HOOKS})
    module_hooks = {n: _module_method(n, log) for n in HOOKS if n not in ("setup", "teardown")}

    def setup(self, stage):
        log.append(f"Module.setup:{stage}")

    def teardown(self, stage):
        log.append(f"Module.teardown:{stage}")

    def training_step(self, batch, batch_idx):
        log.append("training_step")
        return BoringModule.training_step(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        log.append("validation_step")
        return BoringModule.validation_step(self, batch, batch_idx)

    module_cls = type("RecordingModule", (BoringModule,), {
        **module_hooks, "setup": setup, "teardown": teardown,
        "training_step": training_step, "validation_step": validation_step,
    })
    return callback_cls(), module_cls()


def both(name):
    return [f"Callback.{name}", f"Module.{name}"]


def val_loop():
    return [
        *both("on_validation_start"),
        *both("on_validation_epoch_start"),
        *both("on_validation_batch_start"),
        "validation_step",
        *both("on_validation_batch_end"),
        *both("on_validation_epoch_end"),
        *both("on_validation_end"),
    ]


def train_batch():
    return [
        *both("on_train_batch_start"),
        "training_step",
        *both("on_before_backward"),
        *both("on_after_backward"),
        *both("on_before_optimizer_step"),
        *both("on_before_zero_grad"),
        *both("on_train_batch_end"),
    ]


def test_fit_hook_order(tmp_path):
    log = []
    callback, module = recording_pair(log)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                            num_sanity_val_steps=1, logger=False, enable_checkpointing=False, callbacks=[callback])
    trainer.fit(module, loader(32), loader(16))
    expected = [
        "Callback.setup", "Module.setup:fit",
        *both("on_fit_start"),
        *both("on_sanity_check_start"),
        *val_loop(),
        *both("on_sanity_check_end"),
        *both("on_train_start"),
        *both("on_train_epoch_start"),
        *train_batch(),
        *train_batch(),
        *val_loop(),
        *both("on_train_epoch_end"),
        *both("on_train_end"),
        *both("on_fit_end"),
        "Callback.teardown", "Module.teardown:fit",
    ]
    assert log == expected


def test_accumulation_hook_order(tmp_path):
    log = []
    callback, module = recording_pair(log)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, accumulate_grad_batches=2,
                            logger=False, enable_checkpointing=False, callbacks=[callback])
    trainer.fit(module, loader(32))
    batches = log[log.index("Module.on_train_epoch_start") + 1: log.index("Callback.on_train_epoch_end")]
    no_step = [*both("on_train_batch_start"), "training_step", *both("on_before_backward"),
               *both("on_after_backward"), *both("on_train_batch_end")]
    assert batches == no_step + train_batch()


@pytest.mark.parametrize(
    ("stage", "prefix", "step"),
    [("validate", "validation", "validation_step"), ("test", "test", None), ("predict", "predict", None)],
)
def test_evaluation_hook_order(tmp_path, stage, prefix, step):
    log = []
    callback, module = recording_pair(log)
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=[callback])
    kwargs = {"verbose": False} if stage != "predict" else {}
    getattr(trainer, stage)(module, loader(8), **kwargs)
    expected = [
        "Callback.setup", f"Module.setup:{stage}",
        *both(f"on_{prefix}_start"),
        *both(f"on_{prefix}_epoch_start"),
        *both(f"on_{prefix}_batch_start"),
        *([step] if step else []),
        *both(f"on_{prefix}_batch_end"),
        *both(f"on_{prefix}_epoch_end"),
        *both(f"on_{prefix}_end"),
        "Callback.teardown", f"Module.teardown:{stage}",
    ]
    assert log == expected


def test_callbacks_run_in_list_order_before_the_module(tmp_path):
    order = []

    class Named(fulmen.Callback):
        def __init__(self, name):
            self.name = name

        def on_train_start(self):
            order.append(self.name)

    class Last(BoringModule):
        def on_train_start(self):
            order.append("module")

    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False,
                            callbacks=[Named("b"), Named("a"), Named("c")])
    trainer.fit(Last(), loader(8))
    assert order == ["b", "a", "c", "module"]


def test_hooks_take_any_subset_of_their_arguments(tmp_path):
    seen = {}

    class Subsets(fulmen.Callback):
        def on_train_batch_end(self, trainer):
            seen.setdefault("trainer_only", []).append(trainer.global_step)

        def on_train_batch_start(self, batch_idx):
            seen.setdefault("idx_only", []).append(batch_idx)

        def on_before_backward(self, loss, module):
            seen.setdefault("loss", []).append((loss.requires_grad, type(module).__name__))

        def on_validation_batch_end(self, dataloader_idx, outputs, batch):
            seen.setdefault("val", []).append((dataloader_idx, outputs, batch[0].shape[0]))

        def on_fit_start(self):
            seen["no_args"] = True

    class LightningStyle(BoringModule):
        # Lightning's module signatures: no trainer/module, the rest by name
        def on_train_batch_end(self, outputs, batch, batch_idx):
            seen.setdefault("module", []).append((float(outputs["loss"]) >= 0, batch_idx))

        def on_before_optimizer_step(self, optimizer):
            seen["optimizer"] = type(optimizer).__name__

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            seen.setdefault("module_val", []).append(dataloader_idx)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            return dataloader_idx

        def training_step(self, batch, batch_idx):
            return {"loss": super().training_step(batch, batch_idx)}

    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, logger=False,
                            enable_checkpointing=False, callbacks=[Subsets()])
    trainer.fit(LightningStyle(), loader(16), [loader(8), loader(4, batch_size=4)])
    assert seen["trainer_only"] == [1, 2]
    assert seen["idx_only"] == [0, 1]
    assert seen["loss"] == [(True, "LightningStyle")] * 2
    assert seen["val"] == [(0, 0, 8), (1, 1, 4)]
    assert seen["no_args"] is True
    assert seen["module"] == [(True, 0), (True, 1)]
    assert seen["optimizer"] == "SGD"
    assert seen["module_val"] == [0, 1]


def test_module_and_trainer_properties_inside_hooks(tmp_path):
    seen = []

    class Check(BoringModule):
        def on_train_batch_start(self, batch_idx):
            seen.append((self.trainer.training, self.current_epoch, self.global_step, batch_idx, self.training))

        def on_validation_start(self):
            seen.append(("val", self.trainer.training, self.trainer.validating, self.training,
                         torch.is_inference_mode_enabled()))

    trainer = quiet_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False)
    trainer.fit(Check(), loader(16), loader(8))
    assert seen == [
        (True, 0, 0, 0, True), (True, 0, 1, 1, True), ("val", False, True, False, True),
        (True, 1, 2, 0, True), (True, 1, 3, 1, True), ("val", False, True, False, True),
    ]


def test_two_trainers_have_independent_callbacks(tmp_path):
    calls = {"a": 0, "b": 0}

    class Count(fulmen.Callback):
        def __init__(self, key):
            self.key = key

        def on_train_batch_end(self):
            calls[self.key] += 1

    first = quiet_trainer(tmp_path / "a", max_steps=2, logger=False, enable_checkpointing=False, callbacks=[Count("a")])
    second = quiet_trainer(tmp_path / "b", max_steps=3, logger=False, enable_checkpointing=False, callbacks=[Count("b")])
    assert first.fabric.plugin_manager is not second.fabric.plugin_manager
    first.fit(BoringModule(), loader(32))
    assert calls == {"a": 2, "b": 0}
    second.fit(BoringModule(), loader(32))
    assert calls == {"a": 2, "b": 3}
    first.fit(BoringModule(), loader(32))  # a fresh module, the same trainer: only its callback runs
    assert calls == {"a": 4, "b": 3}


def test_a_module_fitted_by_two_trainers_in_turn(tmp_path):
    seen = []

    class Tracks(BoringModule):
        def on_fit_start(self):
            seen.append(self.trainer)

    model = Tracks()
    first = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False)
    second = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False)
    first.fit(model, loader(8))
    second.fit(model, loader(8))
    assert seen == [first, second] and model.trainer is second
