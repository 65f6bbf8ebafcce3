"""Apple GPUs through torch.backends.mps (one device)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fulmen.accelerators.base import Accelerator


class MPSAccelerator(Accelerator):
    name = "mps"
    device_type = "mps"
    auto_priority = 10

    @classmethod
    def is_available(cls) -> bool:
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())

    @classmethod
    def device_count(cls) -> int:
        return 1 if cls.is_available() else 0

    def get_rng_state(self) -> Optional[Any]:
        return torch.mps.get_rng_state()

    def set_rng_state(self, state: Any) -> None:
        if state is not None:
            torch.mps.set_rng_state(state)

    def unsupported_precision_reason(self, precision) -> Optional[str]:
        if precision.name in ("64-true",):
            return "precision='64-true' is not supported on MPS; use '32-true'"
        return None
