"""One rule for what counts as a loggable scalar tensor, for ``self.log`` and ``fabric.log``."""

from __future__ import annotations

import torch

from fulmen.errors import FulmenUserCodeError


def detached_scalar(value: torch.Tensor, call: str) -> torch.Tensor:
    """``value`` detached and 0-dimensional, or an error naming ``call`` (``self.log('x')``)
    when it holds more than one number. Reads nothing from the device."""
    if value.numel() != 1:
        raise FulmenUserCodeError(
            f"{call} got a tensor of shape {tuple(value.shape)}; log a scalar (for example value.mean())"
        )
    value = value.detach()
    return value if value.dim() == 0 else value.reshape(())
