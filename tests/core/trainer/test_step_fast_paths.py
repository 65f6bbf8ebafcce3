"""The per-step shortcuts of the training loop keep its behaviour.

The loop skips work nobody needs (a closure for optimizers that do not use one, pluggy's
machinery for plain hook implementations, the batch size when no epoch mean needs it); each
test here checks the case where the work *is* needed still gets it.
"""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen


class _Recorder(BoringModule):
    def __init__(self, make_optimizer) -> None:
        super().__init__()
        self.make_optimizer = make_optimizer
        self.steps_evaluated = 0
        self.closures = []

    def training_step(self, batch, batch_idx):
        self.steps_evaluated += 1
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        # torch passes the hook step()'s arguments with the optimizer first: (opt, closure?).
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.closures.append(args[1] if len(args) > 1 else kwargs.get("closure")))
        return optimizer


class _MyAdamW(torch.optim.AdamW):
    pass


def test_lbfgs_gets_a_closure_that_reevaluates(tmp_path):
    model = _Recorder(lambda p: torch.optim.LBFGS(p, lr=0.1, max_iter=4))
    quiet_trainer(tmp_path, max_steps=2, logger=False, enable_checkpointing=False).fit(model, loader(16, batch_size=8))
    assert all(callable(c) for c in model.closures) and len(model.closures) == 2
    assert model.steps_evaluated > 2  # LBFGS called the closure again: training_step ran more


@pytest.mark.parametrize("make, gets_closure", [
    (lambda p: torch.optim.AdamW(p, lr=0.01), False),
    (lambda p: torch.optim.SGD(p, lr=0.01), False),
    (lambda p: _MyAdamW(p, lr=0.01), True),  # a subclass may use the closure: it gets one
])
def test_closure_only_where_it_may_be_used(tmp_path, make, gets_closure):
    model = _Recorder(make)
    quiet_trainer(tmp_path, max_steps=3, logger=False, enable_checkpointing=False).fit(model, loader(32, batch_size=8))
    assert len(model.closures) == 3
    assert all(callable(c) == gets_closure for c in model.closures)
    assert model.steps_evaluated == 3


def test_step_without_closure_trains_like_step_with_one(tmp_path, monkeypatch):
    import fulmen.trainer.fit_loop as fit_loop

    def fit(name: str):
        torch.manual_seed(0)
        model = BoringModule()
        quiet_trainer(tmp_path / name, max_epochs=2, logger=False, enable_checkpointing=False).fit(model, loader(32))
        return [p.detach().clone() for p in model.parameters()]

    without = fit("without")
    monkeypatch.setattr(fit_loop, "STEP_WITHOUT_CLOSURE", frozenset())  # every optimizer gets one
    with_closure = fit("with")
    for a, b in zip(without, with_closure):
        assert torch.equal(a, b)


class _Order(fulmen.Callback):
    def __init__(self, name, calls) -> None:
        self.name = name
        self.calls = calls

    def on_train_batch_end(self, trainer, outputs, batch_idx):
        # A bare loss from training_step arrives as {"loss": ...}, as in Lightning.
        self.calls.append((self.name, batch_idx, float(outputs["loss"])))


def test_hook_monitoring_still_sees_every_call(tmp_path):
    """pluggy's hook-call monitoring replaces its call path; the relay must then use it."""
    calls, seen = [], []
    trainer = quiet_trainer(tmp_path, max_steps=2, logger=False, enable_checkpointing=False,
                            callbacks=[_Order("a", calls), _Order("b", calls)])
    pm = trainer.fabric.plugin_manager
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name), lambda *args: None)
    try:
        trainer.fit(BoringModule(), loader(16, batch_size=8))
    finally:
        undo()
    assert seen.count("on_train_batch_end") == 2
    assert [c[:2] for c in calls] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_a_hook_wrapper_goes_through_pluggy(tmp_path):
    events = []

    class Wrapper:
        @fulmen.hookimpl(wrapper=True)
        def on_train_batch_end(self, batch_idx):
            events.append(("before", batch_idx))
            result = yield
            events.append(("after", batch_idx))
            return result

    class Plain(fulmen.Callback):
        def on_train_batch_end(self, batch_idx):
            events.append(("plain", batch_idx))

    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False,
                            plugins=[Wrapper()], callbacks=[Plain()])
    trainer.fit(BoringModule(), loader(16, batch_size=8))
    assert events == [("before", 0), ("plain", 0), ("after", 0)]


def test_outputs_reach_a_hook_that_asks_for_them(tmp_path):
    calls = []
    trainer = quiet_trainer(tmp_path, max_steps=2, logger=False, enable_checkpointing=False, callbacks=[_Order("a", calls)])
    trainer.fit(BoringModule(), loader(16, batch_size=8))
    assert len(calls) == 2 and all(isinstance(c[2], float) for c in calls)


def test_training_epoch_mean_is_weighted_by_batch_size(tmp_path):
    """The batch size is read lazily, only for an epoch mean: batches of 8, 8 and 4."""

    class Logs(BoringModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("idx", float(batch_idx), on_step=False, on_epoch=True)
            return loss

    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(Logs(), loader(20, batch_size=8))
    expected = (0 * 8 + 1 * 8 + 2 * 4) / 20
    assert trainer.callback_metrics["idx"].item() == pytest.approx(expected)
    assert trainer._metrics.batch_size == 4  # the last batch's size, no reference to the batch kept
