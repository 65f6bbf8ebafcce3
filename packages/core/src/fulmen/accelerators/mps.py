"""Apple GPUs through torch.backends.mps (one device)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fulmen.accelerators.base import Accelerator


class MPSAccelerator(Accelerator):
    """Apple silicon GPUs through ``torch.backends.mps`` (``accelerator="mps"``): one device, one
    process; chosen by ``"auto"`` on a Mac without CUDA."""

    name = "mps"
    device_type = "mps"
    auto_priority = 10

    @classmethod
    def is_available(cls) -> bool:
        """Whether this torch build has MPS and the machine supports it."""
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())

    @classmethod
    def device_count(cls) -> int:
        """One where MPS is available (a Mac exposes one GPU), otherwise zero."""
        return 1 if cls.is_available() else 0

    def get_rng_state(self) -> Optional[Any]:
        """The MPS generator's state, so a resumed run draws the same numbers on the GPU."""
        return torch.mps.get_rng_state()

    def set_rng_state(self, state: Any) -> None:
        """Restore the MPS generator from a checkpoint."""
        if state is not None:
            torch.mps.set_rng_state(state)

    def unsupported_precision_reason(self, precision) -> Optional[str]:
        """Refuses ``64-true``: MPS has no float64."""
        if precision.name in ("64-true",):
            return "precision='64-true' is not supported on MPS; use '32-true'"
        return None
