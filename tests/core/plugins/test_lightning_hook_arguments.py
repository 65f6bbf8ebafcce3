"""Hooks written Lightning's way (all arguments, positionally, under any names) run unchanged
beside fulmen's any-subset-by-name hooks, and each receives the real values."""

from __future__ import annotations

import pytest
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.errors import FulmenUserCodeError
from fulmen.plugins import hook_arguments


def _trainer(tmp_path, **kwargs):
    kwargs.setdefault("max_steps", 3)
    return quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, num_sanity_val_steps=0, **kwargs)


class LightningCallback(fulmen.Callback):
    def __init__(self):
        self.seen = []

    def setup(self, trainer, pl_module, stage):
        self.seen.append(("setup", trainer, pl_module, stage))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(("batch_end", trainer, pl_module, outputs, batch, batch_idx))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen.append(("val_batch_end", batch_idx, dataloader_idx))

    def on_before_optimizer_step(self, trainer, lightning_module, optimizer):
        self.seen.append(("before_step", lightning_module, optimizer))

    def on_train_epoch_end(self, *args, **kwargs):
        self.seen.append(("epoch_end",) + args)


class FulmenCallback(fulmen.Callback):
    def __init__(self):
        self.batch_indices = []

    def on_train_batch_end(self, batch_idx, trainer):  # any subset, any order, by name
        self.batch_indices.append(batch_idx)


def test_lightning_style_callback_receives_the_real_arguments(tmp_path):
    lightning_cb, fulmen_cb = LightningCallback(), FulmenCallback()
    module = BoringModule()
    trainer = _trainer(tmp_path, callbacks=[lightning_cb, fulmen_cb], max_steps=-1, max_epochs=1,
                       limit_train_batches=3, limit_val_batches=2)
    trainer.fit(module, loader(), loader())

    kinds = [entry[0] for entry in lightning_cb.seen]
    assert kinds[0] == "setup" and lightning_cb.seen[0][1:] == (trainer, module, "fit")
    batch_ends = [e for e in lightning_cb.seen if e[0] == "batch_end"]
    assert [e[5] for e in batch_ends] == [0, 1, 2]
    for _, got_trainer, got_module, outputs, batch, _ in batch_ends:
        assert got_trainer is trainer and got_module is module
        assert "loss" in outputs and not outputs["loss"].requires_grad
        assert isinstance(batch, (list, tuple)) and batch[0].shape[0] == 8
    steps = [e for e in lightning_cb.seen if e[0] == "before_step"]
    assert len(steps) == 3
    assert all(e[1] is module and hasattr(e[2], "param_groups") for e in steps)
    assert [e[1:] for e in lightning_cb.seen if e[0] == "val_batch_end"] == [(0, 0), (1, 0)]
    epoch_ends = [e for e in lightning_cb.seen if e[0] == "epoch_end"]
    assert len(epoch_ends) == 1 and epoch_ends[0][1:] == (trainer, module)  # *args get everything
    assert fulmen_cb.batch_indices == [0, 1, 2]


def test_lightning_style_module_hooks_skip_trainer_and_module(tmp_path):
    class LightningModuleHooks(BoringModule):
        def __init__(self):
            super().__init__()
            self.got = []

        def on_train_batch_end(self, out, the_batch, idx):  # Lightning's order, own names
            self.got.append((set(out), idx))

        def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
            self.got.append(("val", batch_idx, dataloader_idx))

    module = LightningModuleHooks()
    _trainer(tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(module, loader(), loader())
    assert module.got[:2] == [({"loss"}, 0), ({"loss"}, 1)]
    assert module.got[2] == ("val", 0, 0)


def test_defaulted_documented_argument_receives_the_value_not_its_default(tmp_path):
    """pluggy never passes defaulted arguments; fulmen does, or ``dataloader_idx=0`` would
    stay 0 for a second validation loader."""
    seen = []

    class TwoLoaders(BoringModule):
        def val_dataloader(self):
            return [loader(n=8), loader(n=8)]

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            return super().validation_step(batch, batch_idx)

        def on_validation_batch_end(self, batch_idx, dataloader_idx=0):
            seen.append(dataloader_idx)

    trainer = _trainer(tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=1)
    trainer.fit(TwoLoaders(), loader())
    assert seen == [0, 1]


def test_plans_choose_native_for_fulmen_style_so_nothing_is_wrapped():
    class Plain(fulmen.Callback):
        def on_train_batch_end(self, trainer, batch_idx):
            pass

    plain = Plain()
    registered, plans = hook_arguments.carrier_for_registration(plain, ["on_train_batch_end"], "callback")
    assert registered is plain and plans["on_train_batch_end"].kind == hook_arguments.NATIVE

    lightning = LightningCallback()
    registered, plans = hook_arguments.carrier_for_registration(
        lightning, ["on_train_batch_end", "on_validation_batch_end"], "callback")
    assert isinstance(registered, hook_arguments.AdaptedCarrier) and registered.carrier is lightning
    assert plans["on_train_batch_end"] == hook_arguments.CallPlan(
        hook_arguments.POSITIONAL, ("trainer", "module", "outputs", "batch", "batch_idx"))
    assert plans["on_validation_batch_end"].arguments[-1] == "dataloader_idx"


@pytest.mark.parametrize("signature, why", [
    ("def on_train_batch_end(self, trainer, pl_module, batch_idx): pass", "takes 3 of the 5"),
    ("def on_train_start(self, trainer, pl_module, extra): pass", "more than the 2"),
    ("def on_train_start(self, trainer, *, flag): pass", "keyword-only"),
])
def test_a_hook_that_fits_neither_style_is_refused_before_training(tmp_path, signature, why):
    namespace = {}
    exec(signature, namespace)
    hook_name = signature.split("(")[0].split()[-1]
    Bad = type("Bad", (fulmen.Callback,), {hook_name: namespace[hook_name]})
    trainer = _trainer(tmp_path, callbacks=[Bad()])
    module = BoringModule()
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(FulmenUserCodeError, match=why) as excinfo:
        trainer.fit(module, loader())
    assert f"Bad.{hook_name}" in str(excinfo.value) and "pl_module" in str(excinfo.value)
    assert all((a == b).all() for a, b in zip(before, module.parameters()))  # no step ran
