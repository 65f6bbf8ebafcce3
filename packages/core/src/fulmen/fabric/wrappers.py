"""Thin wrappers that route a user's ``model(x)`` and ``optimizer.step()`` through the
strategy, so a Fabric script reads like plain PyTorch but runs under any precision/strategy.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import nn

from fulmen.errors import FulmenConfigError
from fulmen.precision.base import Precision

# The base precision's no-op hooks; a precision that keeps both needs no work in forward.
_NO_CONVERSION = Precision.convert_input
_NO_CONTEXT = Precision.forward_context


class FabricModule(nn.Module):
    """Runs ``forward`` under the precision's context with inputs converted to its dtype.

    The original module stays reachable as ``.module`` and attributes are forwarded, so
    ``model.some_method()`` and ``model.state_dict()`` work as before.
    """

    def __init__(self, forward_module: nn.Module, strategy: Any, original_module: Optional[nn.Module] = None) -> None:
        super().__init__()
        self._forward_module = forward_module
        self._original_module = original_module or forward_module
        self._strategy = strategy

    @property
    def module(self) -> nn.Module:
        return self._original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        precision = self._strategy.precision
        # ``_modules[...]``: the attribute would go through two ``__getattr__`` fallbacks.
        forward_module = self._modules["_forward_module"]
        precision_type = type(precision)
        if precision_type.convert_input is _NO_CONVERSION and precision_type.forward_context is _NO_CONTEXT:
            # 32-true: nothing to convert and no context to enter; a few µs less per step.
            return forward_module(*args, **kwargs)
        args, kwargs = precision.convert_input((args, kwargs))
        with precision.forward_context():
            return forward_module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any):
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any):
        return self._original_module.load_state_dict(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = super().__getattr__("_original_module")
            return getattr(original, name)


class FabricOptimizer:
    """An optimizer whose ``step`` goes through the strategy (scaler, sharding, hooks)."""

    def __init__(self, optimizer: torch.optim.Optimizer, strategy: Any) -> None:
        self._optimizer = optimizer
        self._strategy = strategy
        # Called after every real step; the Trainer counts steps here in manual optimization.
        self._after_step: List[Callable[[], None]] = []
        self._before_step: List[Callable[[torch.optim.Optimizer], None]] = []
        # The Module whose self.optimizers() handed this out, for toggle_model (Lightning's
        # LightningOptimizer knows its module the same way).
        self._owner: Any = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def step(self, closure: Optional[Callable[[], Any]] = None, **kwargs: Any) -> Any:
        """Step through the strategy; ``closure`` (re)computes the loss and gradients, as
        ``torch.optim.Optimizer.step(closure)`` expects, and its value is returned."""
        if kwargs:
            raise FulmenConfigError(
                f"optimizer.step() got {sorted(kwargs)}: fulmen steps through the strategy, which "
                "passes only a closure; compute what those arguments carry inside the closure"
            )
        for hook in self._before_step:
            hook(self._optimizer)
        result = self._strategy.optimizer_step(self._optimizer, closure)
        for hook in self._after_step:
            hook()
        return result

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    @contextlib.contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Iterator[None]:
        """Train only this optimizer's parameters inside the block (GANs: the generator's
        step must not touch the discriminator), and with ``sync_grad=False`` skip the
        gradient all-reduce of backward passes that accumulate before a step."""
        owner = self._owner
        if owner is None:
            raise FulmenConfigError(
                "toggle_model() needs the optimizer a Module's self.optimizers() returns; with "
                "Fabric, set requires_grad yourself and use fabric.no_backward_sync(model)"
            )
        owner.toggle_optimizer(self)
        try:
            if sync_grad:
                yield
            else:
                trainer = owner.trainer
                with trainer.fabric.no_backward_sync(trainer._forward_module, enabled=True):
                    yield
        finally:
            owner.untoggle_optimizer(self)

    def state_dict(self):
        return self._strategy.optimizer_state_dict(self._optimizer)

    def load_state_dict(self, state):
        self._strategy.load_optimizer_state_dict(self._optimizer, state)

    @property
    def param_groups(self):
        return self._optimizer.param_groups

    @property
    def state(self):
        return self._optimizer.state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)

    def __repr__(self) -> str:
        return f"FabricOptimizer({self._optimizer!r})"


class DeviceDataLoader:
    """Iterates a DataLoader, moves each batch to the strategy's device, and knows its place.

    ``state_dict()`` records the sampler's seed and epoch and how many batches of the current
    pass were handed out, so ``fabric.save({"loader": loader, ...})`` followed by
    ``fabric.load`` continues with exactly the next batch (see ``fulmen.dataloading``).
    """

    def __init__(self, dataloader: Any, strategy: Any, move_to_device: bool = True) -> None:
        from fulmen.dataloading import LoaderPosition

        self.dataloader = dataloader
        self._strategy = strategy
        self._move = move_to_device
        self.position = LoaderPosition(dataloader)

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self) -> Iterator[Any]:
        position = self.position
        drop = position.begin_pass()
        iterator = iter(self.dataloader)
        for _ in range(drop):  # only for loaders that cannot seek (plain iterables)
            if next(iterator, _END) is _END:
                return
        if self._move:
            iterator = self._strategy.device_batches(iterator)
        for batch in iterator:
            position.consumed += 1
            yield batch

    def skip_next(self, batches: int) -> None:
        """Start the next pass ``batches`` into it (mid-epoch resume)."""
        self.position.skip_next(batches)

    def state_dict(self) -> Dict[str, Any]:
        return self.position.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.position.load_state_dict(state)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataloader", "position"):
            raise AttributeError(name)
        return getattr(self.dataloader, name)


_END = object()
