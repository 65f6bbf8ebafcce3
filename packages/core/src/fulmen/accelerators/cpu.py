"""The CPU: always available, the fallback of ``accelerator="auto"``."""

from __future__ import annotations

from typing import List, Optional

import torch

from fulmen.accelerators.base import Accelerator, DevicesArg, parse_device_indices

_CPU_PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true")


class CPUAccelerator(Accelerator):
    """The host CPU: always available, the fallback of ``accelerator="auto"``.

    ``devices=N`` means N processes (for DDP on gloo), all computing on the one CPU device.
    Precisions that need a GPU (``16-mixed``, ``16-true``) are refused with the CPU's choices."""

    name = "cpu"
    device_type = "cpu"
    auto_priority = 0

    @classmethod
    def is_available(cls) -> bool:
        """Always true: every machine has a CPU."""
        return True

    @classmethod
    def device_count(cls) -> int:
        """One: torch addresses the whole CPU as a single device, whatever the number of cores."""
        return 1

    @classmethod
    def parse_devices(cls, devices: DevicesArg) -> List[torch.device]:
        """``devices`` counts processes on the CPU: ``2`` gives two entries of
        ``torch.device("cpu")``, one per rank; ``"auto"`` means one."""
        # On the CPU ``devices`` counts processes; every one of them uses the one device.
        indices = parse_device_indices(devices, 1, 1, cls.name)
        return [torch.device("cpu") for _ in indices]

    def unsupported_precision_reason(self, precision) -> Optional[str]:
        """Refuses the float16 precisions, which need a CUDA GPU; names the ones the CPU runs."""
        if precision.name in _CPU_PRECISIONS or precision.name not in _KNOWN:
            return None
        return (
            f"precision={precision.name!r} needs a CUDA GPU; on the CPU choose one of "
            f"{', '.join(repr(p) for p in _CPU_PRECISIONS)} (bf16-mixed is the CPU's mixed mode)"
        )


_KNOWN = ("16-mixed", "16-true", "32-true", "64-true", "bf16-mixed", "bf16-true")
