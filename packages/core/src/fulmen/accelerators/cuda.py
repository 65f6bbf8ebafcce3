"""NVIDIA GPUs through torch.cuda."""

from __future__ import annotations

from typing import Optional

import torch

from fulmen.accelerators.base import Accelerator


class CUDAAccelerator(Accelerator):
    name = "cuda"
    device_type = "cuda"
    auto_priority = 20

    @classmethod
    def is_available(cls) -> bool:
        return torch.cuda.is_available()

    @classmethod
    def device_count(cls) -> int:
        return torch.cuda.device_count()

    def setup_device(self, device: torch.device) -> None:
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        torch.cuda.empty_cache()

    def unsupported_precision_reason(self, precision) -> Optional[str]:
        if precision.name.startswith("bf16") and not torch.cuda.is_bf16_supported():
            return (
                f"precision={precision.name!r} needs a GPU with bfloat16 support "
                "(Ampere or newer); use '16-mixed' on this GPU"
            )
        return None
