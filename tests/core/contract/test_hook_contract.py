"""What ``fulmen.hookspecs`` promises about hooks holds: the order of implementations
(callbacks, datamodule, module, then plugin modules) and true-scale gradients at
``on_before_optimizer_step`` when the precision scales the loss (``16-mixed``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.precision.base import Precision

SCALE = 1024.0  # a power of two: scaling and unscaling are exact


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


class Tiny(fulmen.Module):
    def __init__(self, order=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.order = order

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_start(self, batch_idx):
        if self.order is not None:
            self.order.append(("module", batch_idx))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**kwargs) -> fulmen.Trainer:
    return fulmen.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )


def test_callbacks_then_module_then_plugin_modules(tmp_path):
    order = []

    class Plugin:
        @fulmen.hookimpl
        def on_train_batch_start(self, batch_idx):
            order.append(("plugin", batch_idx))

    class Recorder(fulmen.Callback):
        def __init__(self, name):
            self.name = name

        def on_train_batch_start(self, batch_idx):
            order.append((self.name, batch_idx))

    trainer = _trainer(plugins=[Plugin()], callbacks=[Recorder("first"), Recorder("second")], default_root_dir=str(tmp_path))
    trainer.fit(Tiny(order), _loader())
    assert order[:4] == [("first", 0), ("second", 0), ("module", 0), ("plugin", 0)]
    assert len(order) == 4 * 4


class LossScaling(Precision):
    """A scaling precision as ``16-mixed`` is, runnable on the CPU: the loss is multiplied
    by SCALE before backward, and the gradients divided by it once before the step."""

    name = "scaled-test"

    def __init__(self) -> None:
        self.unscaled = False

    def backward(self, tensor, module, *args, **kwargs):
        (tensor * SCALE).backward(*args, **kwargs)

    def unscale_gradients(self, optimizer):
        if not self.unscaled:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.div_(SCALE)
            self.unscaled = True

    def optimizer_step(self, optimizer, closure=None):
        self.unscale_gradients(optimizer)
        result = optimizer.step()
        self.unscaled = False
        return result


class GradientRecorder(fulmen.Callback):
    def __init__(self):
        self.grads = []

    def on_before_optimizer_step(self, module):
        self.grads.append([p.grad.clone() for p in module.parameters()])


def test_on_before_optimizer_step_sees_unscaled_gradients(tmp_path):
    plain, scaled = GradientRecorder(), GradientRecorder()
    _trainer(callbacks=[plain], default_root_dir=str(tmp_path)).fit(Tiny(), _loader())
    _trainer(callbacks=[scaled], plugins=[LossScaling()], default_root_dir=str(tmp_path)).fit(Tiny(), _loader())
    assert len(plain.grads) == len(scaled.grads) == 4
    for want, got in zip(plain.grads, scaled.grads):
        for a, b in zip(want, got):
            assert torch.equal(a, b)


def test_manual_optimization_hook_also_sees_unscaled_gradients(tmp_path):
    class Manual(Tiny):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.manual_backward(loss)
            opt.step()
            opt.zero_grad()

    plain, scaled = GradientRecorder(), GradientRecorder()
    _trainer(callbacks=[plain], default_root_dir=str(tmp_path)).fit(Manual(), _loader())
    _trainer(callbacks=[scaled], plugins=[LossScaling()], default_root_dir=str(tmp_path)).fit(Manual(), _loader())
    assert len(scaled.grads) == 4
    for want, got in zip(plain.grads, scaled.grads):
        assert all(torch.equal(a, b) for a, b in zip(want, got))
