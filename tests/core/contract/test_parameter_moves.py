"""A move that replaces parameter objects (CPU to XLA; CPU to meta here, which torch also
cannot do in place) must leave the optimizer stepping the module's new parameters."""

from __future__ import annotations

import torch
from torch import nn

from fulmen.strategies.base import Strategy
from fulmen.strategies.parameter_moves import replaced_parameters, repoint_optimizer


class _MetaStrategy(Strategy):
    """Places modules on the meta device: a real move that creates new Parameter objects."""

    @property
    def root_device(self) -> torch.device:
        return torch.device("meta")


def test_setup_module_and_optimizers_repoints_an_optimizer_built_before_the_move():
    module = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    strategy = _MetaStrategy()
    strategy.fill_defaults()
    wrapped, [opt], _ = strategy.setup_module_and_optimizers(module, lambda: ([optimizer], []))
    params = [p for group in opt.param_groups for p in group["params"]]
    assert all(p.device.type == "meta" for p in params)
    assert [id(p) for p in params] == [id(p) for p in module.parameters()]


def test_a_move_in_place_replaces_nothing_and_state_follows_a_replacement():
    module = nn.Linear(3, 2)
    before = list(module.parameters())
    module.to(torch.float32)  # same device: torch keeps the objects
    assert replaced_parameters(before, module) == {}

    optimizer = torch.optim.Adam(module.parameters())
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    before = list(module.parameters())
    module.to("meta")
    replaced = replaced_parameters(before, module)
    assert len(replaced) == 2
    repoint_optimizer(optimizer, replaced)
    assert set(map(id, optimizer.state)) == set(map(id, module.parameters()))
