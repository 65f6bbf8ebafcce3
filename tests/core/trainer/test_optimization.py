"""Gradient accumulation, clipping, configure_optimizers shapes, schedulers, manual optimization."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer
from torch import nn

import fulmen
from fulmen.errors import FulmenConfigError, FulmenUserCodeError


def trainer_for(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    return quiet_trainer(tmp_path, **kwargs)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------- accumulation


def test_accumulating_four_batches_of_8_equals_batches_of_32(tmp_path):
    torch.manual_seed(0)
    accumulated = BoringModule(lr=0.1)
    plain = BoringModule(lr=0.1)
    plain.load_state_dict(accumulated.state_dict())

    t1 = trainer_for(tmp_path, max_epochs=2, accumulate_grad_batches=4)
    t1.fit(accumulated, loader(64, batch_size=8))
    t2 = trainer_for(tmp_path, max_epochs=2)
    t2.fit(plain, loader(64, batch_size=32))

    assert t1.global_step == t2.global_step == 4  # optimizer steps, not micro-batches
    for a, b in zip(accumulated.parameters(), plain.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # without accumulation, batches of 8 end somewhere else (so the comparison means something)
    every_batch = BoringModule(lr=0.1)
    torch.manual_seed(0)
    every_batch.load_state_dict(BoringModule(lr=0.1).state_dict())
    trainer_for(tmp_path, max_epochs=2).fit(every_batch, loader(64, batch_size=8))
    assert not torch.allclose(every_batch.layer.weight, plain.layer.weight, atol=1e-4)


def test_accumulation_steps_on_the_epochs_last_batch(tmp_path):
    steps = []

    class Spy(fulmen.Callback):
        def on_before_optimizer_step(self, trainer, batch_idx=None):
            steps.append(trainer.global_step)

        def on_train_batch_end(self, trainer, batch_idx):
            steps.append(("end", batch_idx, trainer.global_step))

    trainer = trainer_for(tmp_path, max_epochs=1, accumulate_grad_batches=3, callbacks=[Spy()])
    trainer.fit(BoringModule(), loader(56))  # 7 batches: windows of 3, 3 and the last 1
    assert trainer.global_step == 3
    ends = [s for s in steps if isinstance(s, tuple)]
    assert [g for _, _, g in ends] == [0, 0, 1, 1, 1, 2, 3]


def test_accumulate_grad_batches_must_be_a_positive_int(tmp_path):
    for bad in (0, 2.5, "2"):
        with pytest.raises(FulmenConfigError, match="accumulate_grad_batches"):
            quiet_trainer(tmp_path, accumulate_grad_batches=bad)


def test_estimated_stepping_batches_accounts_for_accumulation(tmp_path):
    seen = {}

    class Spy(fulmen.Callback):
        def on_train_start(self, trainer):
            seen["estimate"] = trainer.estimated_stepping_batches

    trainer = trainer_for(tmp_path, max_epochs=3, accumulate_grad_batches=3, callbacks=[Spy()])
    trainer.fit(BoringModule(), loader(64))  # ceil(8 / 3) = 3 steps per epoch
    assert seen["estimate"] == 9 == trainer.global_step


# --------------------------------------------------------------------------- clipping


class OneStep(fulmen.Module):
    """One SGD step with lr=1 on a fixed loss, so the update equals the (clipped) gradient."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        self.grad_seen = None

    def loss_of(self, weight):
        coefficients = torch.tensor([3.0, -0.5, 10.0])
        return (weight * coefficients).sum() + 0.5 * (weight**2).sum()

    def training_step(self, batch, batch_idx):
        return self.loss_of(self.weight)

    def on_before_optimizer_step(self, optimizer):
        self.grad_seen = self.weight.grad.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def one_step(tmp_path, **kwargs):
    model = OneStep()
    before = model.weight.detach().clone()
    trainer = trainer_for(tmp_path, max_steps=1, **kwargs)
    trainer.fit(model, loader(8))
    return model, before, before - model.weight.detach()


def expected_grad():
    return torch.tensor([3.0, -0.5, 10.0]) + torch.tensor([1.0, -2.0, 3.0])  # [4, -2.5, 13]


def test_no_clipping_applies_the_raw_gradient(tmp_path):
    model, _, update = one_step(tmp_path)
    assert torch.allclose(update, expected_grad())
    assert torch.allclose(model.grad_seen, expected_grad())


def test_gradient_clip_by_norm(tmp_path):
    model, _, update = one_step(tmp_path, gradient_clip_val=1.0)  # default algorithm: norm
    grad = expected_grad()
    assert torch.allclose(update, grad / grad.norm(), atol=1e-5)
    assert update.norm() == pytest.approx(1.0, abs=1e-5)
    # on_before_optimizer_step runs before clipping (as in Lightning): it sees the raw gradient
    assert torch.allclose(model.grad_seen, grad)
    _, _, explicit = one_step(tmp_path, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert torch.allclose(explicit, update)


def test_gradient_clip_by_value(tmp_path):
    _, _, update = one_step(tmp_path, gradient_clip_val=3.0, gradient_clip_algorithm="value")
    assert torch.allclose(update, torch.tensor([3.0, -2.5, 3.0]))


def test_clip_norm_larger_than_the_gradient_changes_nothing(tmp_path):
    _, _, update = one_step(tmp_path, gradient_clip_val=100.0)
    assert torch.allclose(update, expected_grad())


def test_unknown_clip_algorithm_is_a_config_error(tmp_path):
    with pytest.raises(FulmenConfigError, match="gradient_clip_algorithm"):
        quiet_trainer(tmp_path, gradient_clip_val=1.0, gradient_clip_algorithm="l1")


# --------------------------------------------------------------------------- configure_optimizers


class Configurable(BoringModule):
    def __init__(self, make=None):
        super().__init__(lr=1.0)
        self._make = make

    def configure_optimizers(self):
        return self._make(self)


def sgd(model, lr=1.0):
    return torch.optim.SGD(model.parameters(), lr=lr)


def steplr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def fit_with(tmp_path, make, max_epochs=2, **kwargs):
    model = Configurable(make)
    trainer = trainer_for(tmp_path, max_epochs=max_epochs, **kwargs)
    trainer.fit(model, loader(32))  # 4 batches per epoch
    return trainer, model


def lr_of(trainer):
    return trainer.optimizers[0].optimizer.param_groups[0]["lr"]


def test_a_single_optimizer(tmp_path):
    trainer, _ = fit_with(tmp_path, lambda m: sgd(m))
    assert len(trainer.optimizers) == 1 and trainer.lr_scheduler_configs == []
    assert isinstance(trainer.optimizers[0].optimizer, torch.optim.SGD)


def test_a_list_with_one_optimizer(tmp_path):
    trainer, _ = fit_with(tmp_path, lambda m: [sgd(m)])
    assert len(trainer.optimizers) == 1 and trainer.global_step == 8


def test_optimizers_and_schedulers_tuple_steps_per_epoch(tmp_path):
    def make(m):
        opt = sgd(m)
        return [opt], [steplr(opt)]

    trainer, _ = fit_with(tmp_path, make, max_epochs=3)
    assert trainer.lr_scheduler_configs[0].interval == "epoch"
    assert lr_of(trainer) == pytest.approx(0.5**3)


def test_dict_with_a_bare_scheduler_steps_per_epoch(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": steplr(opt)}

    trainer, _ = fit_with(tmp_path, make)
    assert lr_of(trainer) == pytest.approx(0.25)


def test_scheduler_dict_interval_step(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": steplr(opt), "interval": "step"}}

    trainer, _ = fit_with(tmp_path, make)
    assert lr_of(trainer) == pytest.approx(0.5**8)


def test_scheduler_dict_step_frequency(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": steplr(opt), "interval": "step", "frequency": 2}}

    trainer, _ = fit_with(tmp_path, make)
    assert lr_of(trainer) == pytest.approx(0.5**4)


def test_scheduler_dict_epoch_frequency(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": steplr(opt), "interval": "epoch", "frequency": 2}}

    trainer, _ = fit_with(tmp_path, make, max_epochs=4)
    assert lr_of(trainer) == pytest.approx(0.25)


def test_step_scheduler_steps_once_per_accumulated_step(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": steplr(opt), "interval": "step"}}

    trainer, _ = fit_with(tmp_path, make, accumulate_grad_batches=2)
    assert trainer.global_step == 4 and lr_of(trainer) == pytest.approx(0.5**4)


class ConstantMetric(Configurable):
    """Logs a metric that never improves, so ReduceLROnPlateau(patience=0) reduces every time."""

    def training_step(self, batch, batch_idx):
        self.log("flat", 1.0, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.log("val_flat", 2.0)


def plateau(opt):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0)


@pytest.mark.parametrize("monitor", ["flat", "val_flat"])
def test_reduce_lr_on_plateau_with_monitor(tmp_path, monitor):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau(opt), "monitor": monitor}}

    model = ConstantMetric(make)
    trainer = trainer_for(tmp_path, max_epochs=3)
    trainer.fit(model, loader(32), loader(8))
    # epoch 0 sets the best value, epochs 1 and 2 do not improve on it
    assert lr_of(trainer) == pytest.approx(0.25)


def test_reduce_lr_on_plateau_monitor_at_the_top_level_of_the_dict(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": plateau(opt), "monitor": "flat"}

    trainer = trainer_for(tmp_path, max_epochs=3)
    trainer.fit(ConstantMetric(make), loader(32))
    assert lr_of(trainer) == pytest.approx(0.25)


def test_reduce_lr_on_plateau_missing_metric_lists_the_logged_ones(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau(opt), "monitor": "val_acc"}}

    with pytest.raises(FulmenUserCodeError, match="val_acc") as info:
        fit_with(tmp_path, make)
    message = str(info.value)
    assert "not logged" in message and "train_loss" in message and "strict" in message


def test_reduce_lr_on_plateau_missing_metric_with_strict_false_is_skipped(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau(opt), "monitor": "val_acc", "strict": False}}

    trainer, _ = fit_with(tmp_path, make)
    assert lr_of(trainer) == 1.0


def test_reduce_lr_on_plateau_without_monitor_is_refused(tmp_path):
    def make(m):
        opt = sgd(m)
        return {"optimizer": opt, "lr_scheduler": plateau(opt)}

    with pytest.raises(FulmenUserCodeError, match="ReduceLROnPlateau.*monitor"):
        fit_with(tmp_path, make)


def _other_optimizer_scheduler(m):
    opt = sgd(m)
    stray = torch.optim.SGD(m.parameters(), lr=1.0)
    return [opt], [steplr(stray)]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda m: "adam", "returned a str"),
        (lambda m: 42, "returned a int"),
        (lambda m: [], "an empty list"),
        (lambda m: [sgd(m), "sgd"], r"a sequence of \(SGD, str\)"),
        (lambda m: {"lr_scheduler": None}, r"a dict with keys \['lr_scheduler'\]"),
        (lambda m: {"optimizer": sgd(m), "scheduler": None}, r"a dict with keys \['optimizer', 'scheduler'\]"),
        (lambda m: {"optimizer": "sgd"}, "whose 'optimizer' is a str"),
        (lambda m: {"optimizer": sgd(m), "lr_scheduler": {"interval": "step"}}, "without a 'scheduler' key"),
        (lambda m: {"optimizer": (o := sgd(m)), "lr_scheduler": {"scheduler": steplr(o), "interval": "batch"}},
         "interval='batch'"),
        (lambda m: {"optimizer": (o := sgd(m)), "lr_scheduler": {"scheduler": steplr(o), "frequency": 0}},
         "frequency=0"),
        (lambda m: {"optimizer": (o := sgd(m)), "lr_scheduler": {"scheduler": steplr(o), "every": 2}},
         r"unknown keys \['every'\]"),
        (lambda m: {"optimizer": sgd(m), "lr_scheduler": object()}, "has no step"),
        (lambda m: (["sgd"], []), "non-optimizers"),
        (_other_optimizer_scheduler, "did not return"),
    ],
)
def test_bad_configure_optimizers_shapes_name_the_problem(tmp_path, make, fragment):
    with pytest.raises(FulmenUserCodeError, match=fragment):
        fit_with(tmp_path, make)


def test_returning_none_is_a_clear_error(tmp_path):
    with pytest.raises(FulmenUserCodeError, match="no optimizer"):
        fit_with(tmp_path, lambda m: None)


def test_two_optimizers_with_automatic_optimization_are_refused(tmp_path):
    with pytest.raises(FulmenUserCodeError, match=r"2 optimizers.*automatic_optimization = False"):
        fit_with(tmp_path, lambda m: [sgd(m), sgd(m)])


def test_missing_configure_optimizers_is_named(tmp_path):
    class NoOpt(fulmen.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

    with pytest.raises(FulmenUserCodeError, match="configure_optimizers"):
        trainer_for(tmp_path, max_epochs=1).fit(NoOpt(), loader(8))


# --------------------------------------------------------------------------- manual optimization


class Manual(BoringModule):
    def __init__(self, step_every=1):
        super().__init__(lr=0.1)
        self.automatic_optimization = False
        self.step_every = step_every
        self.steps_seen = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss / self.step_every)
        if (batch_idx + 1) % self.step_every == 0:
            opt.step()
            opt.zero_grad()
            self.steps_seen.append(self.global_step)
            self.lr_schedulers().step()
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def test_manual_optimization_counts_optimizer_steps(tmp_path):
    model = Manual(step_every=2)
    before = params_of(model)
    hooks = []

    class Spy(fulmen.Callback):
        def on_before_backward(self, loss):
            hooks.append("on_before_backward")

        def on_after_backward(self):
            hooks.append("on_after_backward")

        def on_before_optimizer_step(self, optimizer):
            hooks.append("on_before_optimizer_step")

    trainer = trainer_for(tmp_path, max_epochs=1, callbacks=[Spy()])
    trainer.fit(model, loader(64))
    assert trainer.global_step == 4
    assert model.steps_seen == [1, 2, 3, 4]
    assert hooks.count("on_before_backward") == hooks.count("on_after_backward") == 8
    assert hooks.count("on_before_optimizer_step") == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.optimizers[0].optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert "train_loss" in trainer.callback_metrics


def test_manual_step_matches_an_automatic_step(tmp_path):
    torch.manual_seed(0)
    manual, automatic = Manual(), BoringModule(lr=0.1)
    automatic.load_state_dict(manual.state_dict())
    before = params_of(manual)
    trainer_for(tmp_path, max_steps=1).fit(manual, loader(32))
    trainer_for(tmp_path, max_steps=1).fit(automatic, loader(32))
    assert not torch.equal(manual.layer.weight, before[0])
    for a, b in zip(manual.parameters(), automatic.parameters()):
        assert torch.allclose(a, b)


class Gan(fulmen.Module):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(4, 8)
        self.discriminator = nn.Linear(8, 1)
        self.order = []

    def training_step(self, batch, batch_idx):
        g_opt, d_opt = self.optimizers()
        real, _ = batch
        noise = torch.randn(real.shape[0], 4)

        self.toggle_optimizer(d_opt)
        fake = self.generator(noise)  # no detach: toggle_optimizer freezes the generator
        d_loss = self.discriminator(fake).mean() - self.discriminator(real).mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        assert self.generator.weight.grad is None  # frozen while the discriminator trains
        d_opt.step()
        d_opt.zero_grad()
        self.untoggle_optimizer(d_opt)
        self.order.append(("d", self.global_step))

        self.toggle_optimizer(g_opt)
        g_loss = -self.discriminator(self.generator(noise)).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        g_opt.zero_grad()
        self.untoggle_optimizer(g_opt)
        self.order.append(("g", self.global_step))
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.generator.parameters(), lr=0.01),
                torch.optim.SGD(self.discriminator.parameters(), lr=0.01)]


def test_two_optimizers_in_manual_optimization(tmp_path):
    torch.manual_seed(0)
    model = Gan()
    g_before = params_of(model.generator)
    d_before = params_of(model.discriminator)
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(model, loader(32))
    assert trainer.global_step == 8  # each optimizer.step counts, two per batch (Lightning)
    assert model.order[:4] == [("d", 1), ("g", 2), ("d", 3), ("g", 4)]
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # untoggled
    assert {"d_loss", "g_loss"} <= set(trainer.progress_bar_metrics)


def test_manual_optimization_refuses_automatic_only_settings(tmp_path):
    for kwargs in ({"gradient_clip_val": 1.0}, {"accumulate_grad_batches": 2}):
        with pytest.raises(FulmenConfigError, match="manual optimization"):
            trainer_for(tmp_path, max_epochs=1, **kwargs).fit(Manual(), loader(16))


def test_manual_backward_in_automatic_optimization_is_refused(tmp_path):
    class Wrong(BoringModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            return loss

    with pytest.raises(FulmenConfigError, match="manual_backward is for manual optimization"):
        trainer_for(tmp_path, max_epochs=1).fit(Wrong(), loader(16))


def test_manual_training_step_may_return_nothing(tmp_path):
    class Quiet(Manual):
        def training_step(self, batch, batch_idx):
            super().training_step(batch, batch_idx)

    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(Quiet(), loader(16))
    assert trainer.global_step == 2


class ManualClip(OneStep):
    def __init__(self, algorithm):
        super().__init__()
        self.automatic_optimization = False
        self.algorithm = algorithm

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(self.loss_of(self.weight))
        self.clip_gradients(opt, gradient_clip_val=1.0 if self.algorithm == "norm" else 3.0,
                            gradient_clip_algorithm=self.algorithm)
        opt.step()


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clip_gradients_in_manual_optimization(tmp_path, algorithm):
    model = ManualClip(algorithm)
    before = model.weight.detach().clone()
    trainer_for(tmp_path, max_steps=1).fit(model, loader(8))
    update = before - model.weight.detach()
    grad = expected_grad()
    expected = grad / grad.norm() if algorithm == "norm" else torch.tensor([3.0, -2.5, 3.0])
    assert torch.allclose(update, expected, atol=1e-5)
