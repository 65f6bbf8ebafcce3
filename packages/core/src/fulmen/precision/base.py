"""Precision as a bundle of no-op hooks that subclasses fill in.

A strategy calls these at fixed points (module conversion, input conversion, forward,
backward, optimizer step), so a precision mode never needs to know which strategy runs it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Optional

import torch
from torch import nn


class Precision:
    """``32-true``: everything in float32, nothing to do."""

    name: str = "32-true"

    def setup(self, device: torch.device) -> None:
        """Called once the strategy knows its device (mixed modes need its type)."""
        self.device = device

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Change a module before it is moved and wrapped (the strategy's ``setup_module``):
        ``*-true`` modes cast its parameters; returns the module to use."""
        return module

    def convert_input(self, data: Any) -> Any:
        """Change a batch after it reached the device, before the forward pass: ``*-true`` modes
        cast floating tensors. Must keep the structure and leave integer and bool tensors alone."""
        return data

    def forward_context(self) -> ContextManager:
        """Entered around every forward pass (``training_step`` and friends, ``Fabric.autocast``):
        autocast for mixed modes, nothing here."""
        return contextlib.nullcontext()

    def module_init_context(self) -> ContextManager:
        """Where a model is built, so that ``*-true`` modes create it in their dtype."""
        return contextlib.nullcontext()

    def backward(self, tensor: torch.Tensor, module: Optional[nn.Module], *args: Any, **kwargs: Any) -> None:
        """Run backward for ``tensor``; a mode with a gradient scaler scales the loss first.
        ``module`` is the model being trained, for modes that need it."""
        tensor.backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before clipping (only scalers do work)."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Step ``optimizer`` (with ``closure`` when given) and return what it returns; a scaler
        skips steps whose gradients overflowed."""
        return optimizer.step(closure) if closure is not None else optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        """What this precision must keep across a resume (a scaler's scale), as plain data; stored in
        Trainer checkpoints under ``"precision"``. Empty when it keeps nothing."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, after :meth:`setup`."""
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
