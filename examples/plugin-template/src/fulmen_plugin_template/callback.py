"""A callback: a ``fulmen.Callback`` subclass whose methods are named after hooks.

Each hook method takes any subset of the hook's documented arguments, by name (see
docs/plugins.md): this one needs only ``module`` and ``optimizer``.
"""

from __future__ import annotations

import torch

import fulmen


class GradNormMonitor(fulmen.Callback):
    """Logs ``grad_norm``, the 2-norm of all gradients, right before each optimizer step
    (after unscaling under 16-mixed, before clipping)."""

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = norm_type

    def on_before_optimizer_step(self, module, optimizer):
        grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, self.norm_type) for g in grads]),
                                            self.norm_type)
            # Stays on the device: fulmen reads logged values only at logging intervals.
            module.log("grad_norm", norm, on_step=True, on_epoch=False)
