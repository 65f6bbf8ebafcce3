"""One process, one device: the default when a single device is selected."""

from __future__ import annotations

from typing import Optional

import torch

from fulmen.strategies.base import Strategy


class SingleDeviceStrategy(Strategy):
    """One process on one device (``strategy="single_device"``, what ``"auto"`` picks for one
    device). ``device`` pins it; otherwise the first of the selected devices is used."""
    name = "single_device"

    def __init__(self, device: Optional[torch.device | str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._device = torch.device(device) if device is not None else None

    @property
    def root_device(self) -> torch.device:
        if self._device is not None:
            return self._device
        if self.parallel_devices:
            return self.parallel_devices[0]
        return torch.device("cpu")
