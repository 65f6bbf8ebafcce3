"""The optimizers ``self.optimizers()`` returns behave like Lightning's ``LightningOptimizer``
in manual optimization: ``step(closure)``, ``zero_grad()``, ``toggle_model()``."""

from __future__ import annotations

import pytest
import torch
from helpers import loader, quiet_trainer
from torch import nn

import fulmen
from fulmen.errors import FulmenConfigError


class TwoNets(fulmen.Module):
    """A GAN-shaped module: two sub-networks, one optimizer each, stepped by hand."""

    def __init__(self, check):
        super().__init__()
        self.automatic_optimization = False
        self.first = nn.Linear(8, 4)
        self.second = nn.Linear(4, 1)
        self.check = check
        self.record = []

    def training_step(self, batch, batch_idx):
        return self.check(self, batch, batch_idx)

    def configure_optimizers(self):
        return (torch.optim.SGD(self.first.parameters(), lr=0.1),
                torch.optim.SGD(self.second.parameters(), lr=0.1))


def _fit(tmp_path, check, batches=2):
    module = TwoNets(check)
    trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
                            max_epochs=1, limit_train_batches=batches)
    trainer.fit(module, loader(32))
    return module, trainer


def test_toggle_model_trains_only_that_optimizers_parameters(tmp_path):
    def check(self, batch, batch_idx):
        opt_first, opt_second = self.optimizers()
        x, y = batch
        second_before = [p.detach().clone() for p in self.second.parameters()]
        with opt_first.toggle_model():
            self.record.append([p.requires_grad for p in self.second.parameters()])
            loss = nn.functional.mse_loss(self.second(self.first(x)), y)
            self.manual_backward(loss)
            opt_first.step()
            opt_first.zero_grad()
        assert all(torch.equal(a, b) for a, b in zip(second_before, self.second.parameters()))
        self.record.append([p.requires_grad for p in self.second.parameters()])  # restored after

    module, trainer = _fit(tmp_path, check)
    assert module.record == [[False, False], [True, True]] * 2
    assert trainer.global_step == 2  # one real step per batch


def test_step_with_a_closure_runs_it_and_returns_its_loss(tmp_path):
    def check(self, batch, batch_idx):
        opt_first, opt_second = self.optimizers()
        x, y = batch

        def closure():
            opt_second.zero_grad()
            loss = nn.functional.mse_loss(self.second(self.first(x).detach()), y)
            self.manual_backward(loss)
            self.record.append(float(loss))
            return loss

        before = self.second.weight.detach().clone()
        returned = opt_second.step(closure=closure)
        assert float(returned) == self.record[-1]
        assert not torch.equal(before, self.second.weight)

    module, _ = _fit(tmp_path, check)
    assert len(module.record) == 2


def test_use_pl_optimizer_false_gives_the_torch_optimizers_and_bad_step_arguments_are_named(tmp_path):
    def check(self, batch, batch_idx):
        raw_first, raw_second = self.optimizers(use_pl_optimizer=False)
        assert type(raw_first) is torch.optim.SGD and type(raw_second) is torch.optim.SGD
        wrapped_first, _ = self.optimizers()
        assert wrapped_first.optimizer is raw_first and wrapped_first.param_groups is raw_first.param_groups
        with pytest.raises(FulmenConfigError, match=r"\['foo'\]"):
            wrapped_first.step(foo=1)
        self.record.append(True)

    module, _ = _fit(tmp_path, check, batches=1)
    assert module.record == [True]


def test_toggle_model_outside_a_module_says_what_to_use_instead():
    fabric = fulmen.Fabric(accelerator="cpu", devices=1)
    model, optimizer = fabric.setup(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    with pytest.raises(FulmenConfigError, match="no_backward_sync"):
        with optimizer.toggle_model():
            pass
