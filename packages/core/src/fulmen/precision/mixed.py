"""``bf16-mixed`` and ``16-mixed``: float32 weights, autocast forward, a scaler for fp16."""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, Optional

import torch
from torch import nn

from fulmen.precision.base import Precision


class MixedPrecision(Precision):
    """Autocast around the forward pass; with float16, a ``GradScaler`` guards the gradients.

    The scaler's state (current scale, growth tracker) is part of the checkpoint, because
    resuming with a fresh scale of 65536 costs several skipped steps and breaks exact resume.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16, scaler: Optional[Any] = None) -> None:
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"MixedPrecision takes torch.bfloat16 or torch.float16, not {dtype}")
        self.dtype = dtype
        self.name = "bf16-mixed" if dtype == torch.bfloat16 else "16-mixed"
        self.scaler = scaler
        self.device_type = "cpu"

    def setup(self, device: torch.device) -> None:
        """Remember the device type for autocast and create the float16 ``GradScaler`` for it."""
        super().setup(device)
        self.device_type = device.type
        if self.dtype == torch.float16 and self.scaler is None:
            self.scaler = torch.amp.GradScaler(device.type)

    def forward_context(self) -> ContextManager:
        """``torch.autocast`` on the device's type in the chosen half dtype."""
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, tensor: torch.Tensor, module: Optional[nn.Module], *args: Any, **kwargs: Any) -> None:
        """Backward on the scaled loss under ``16-mixed``, plainly under ``bf16-mixed``."""
        if self.scaler is not None:
            tensor = self.scaler.scale(tensor)
        tensor.backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the current scale once per step, so clipping and
        ``on_before_optimizer_step`` see their true values; a second call in the same step is a no-op."""
        if self.scaler is None:
            return
        # GradScaler refuses a second unscale in one step; clipping twice must stay legal.
        state = self.scaler._per_optimizer_states[id(optimizer)]
        if state["stage"].name != "UNSCALED":
            self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Step through the scaler, which skips the step when gradients overflowed and adjusts the
        scale; a closure runs first, since the scaler cannot pass one through."""
        if self.scaler is None:
            return super().optimizer_step(optimizer, closure)
        if closure is not None:
            # The scaler cannot pass a closure through; run it (forward + backward) first.
            closure()
        result = self.scaler.step(optimizer)
        self.scaler.update()
        return result

    def state_dict(self) -> Dict[str, Any]:
        """The scaler's state (scale and growth tracker), so a resumed run continues exactly."""
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the scaler's state from a checkpoint, if both have one."""
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
