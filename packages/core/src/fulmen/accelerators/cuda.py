"""NVIDIA GPUs through torch.cuda."""

from __future__ import annotations

from typing import Any, Optional

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

    non_blocking_copies = True  # copies go on the current stream; kernels after them wait

    def get_rng_state(self) -> Optional[Any]:
        # Initialising CUDA only to read its generators would cost seconds and memory on
        # every device; a process that never touched CUDA has nothing to keep.
        if not torch.cuda.is_initialized():
            return None
        return torch.cuda.get_rng_state_all()

    def set_rng_state(self, state: Any) -> None:
        if state is not None and len(state) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state)

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
