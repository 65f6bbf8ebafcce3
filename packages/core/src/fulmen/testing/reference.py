"""The reference problem every training check uses: a small MLP regression, trained with
plain PyTorch as the ground truth that a strategy, precision or accelerator must reproduce.

Small on purpose (161 parameters, 64 samples): the checks run in seconds on a laptop CPU,
and a difference in gradient averaging, parameter broadcast or optimizer state still shows
in the second decimal. The data order is fixed (no shuffling), so a data-parallel strategy
with ``world_size`` ranks sees, per step, exactly the samples of one global batch.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import TensorDataset

FEATURES = 8
HIDDEN = 16
SAMPLES = 64
GLOBAL_BATCH = 16
LEARNING_RATE = 0.1
MOMENTUM = 0.5
EPOCHS = 2


def dataset() -> TensorDataset:
    """The 64 fixed samples of the reference regression (8 features, one target)."""
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    w = torch.randn(FEATURES, 1, generator=generator)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(SAMPLES, 1, generator=generator)
    return TensorDataset(x, y)


def make_model(seed: int = 0) -> nn.Module:
    """The same initial weights for a given seed, without touching the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def make_optimizer(parameters) -> torch.optim.Optimizer:
    """SGD with momentum, so the optimizer has state that checkpoint checks must carry."""
    # Momentum gives the optimizer a state, which the checkpoint checks must carry.
    return torch.optim.SGD(parameters, lr=LEARNING_RATE, momentum=MOMENTUM)


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error, computed in float32 whatever the precision of the output."""
    return nn.functional.mse_loss(output.float(), target.float())


def reference_parameters(epochs: int = EPOCHS, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """Plain PyTorch on one device: what every conforming setup must end close to."""
    model = make_model(0).to(dtype)
    optimizer = make_optimizer(model.parameters())
    data = dataset()
    for _ in range(epochs):
        for start in range(0, SAMPLES, GLOBAL_BATCH):
            x, y = data[start:start + GLOBAL_BATCH]
            optimizer.zero_grad()
            loss_fn(model(x.to(dtype)), y.to(dtype)).backward()
            optimizer.step()
    return {k: v.detach().float() for k, v in model.state_dict().items()}


def reference_losses(epochs: int = EPOCHS) -> List[float]:
    """The loss of every step of plain PyTorch training on one device."""
    model = make_model(0)
    optimizer = make_optimizer(model.parameters())
    data = dataset()
    losses = []
    for _ in range(epochs):
        for start in range(0, SAMPLES, GLOBAL_BATCH):
            x, y = data[start:start + GLOBAL_BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def reference_module(fail_at_step: Optional[int] = None, metrics_per_step: int = 1):
    """A ``fulmen.Module`` training the reference model that logs ``loss`` (and more
    ``metric_i``) every step and, if asked, raises at batch ``fail_at_step``."""
    import fulmen

    class ReferenceModule(fulmen.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model(0)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if fail_at_step is not None and self.trainer.global_step >= fail_at_step:
                raise RuntimeError(f"conformance: planned failure at step {self.trainer.global_step}")
            x, y = batch
            loss = loss_fn(self(x), y)
            self.log("loss", loss)
            for i in range(1, metrics_per_step):
                self.log(f"metric_{i}", loss * i)
            return loss

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    return ReferenceModule()


def reference_loader(batch_size: int = GLOBAL_BATCH):
    """A DataLoader over the reference data in fixed order (no shuffling)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset(), batch_size=batch_size, shuffle=False)
