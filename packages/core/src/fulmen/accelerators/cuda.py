"""NVIDIA GPUs through torch.cuda."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fulmen.accelerators.base import Accelerator


class CUDAAccelerator(Accelerator):
    """NVIDIA GPUs through ``torch.cuda`` (``accelerator="cuda"``, or ``"auto"`` where a GPU is
    visible: it has the highest priority of the built-ins).

    Batch copies are issued non-blocking, each process pins its device with
    ``torch.cuda.set_device``, and the CUDA generators are kept in checkpoints once CUDA is in use."""

    name = "cuda"
    device_type = "cuda"
    auto_priority = 20

    @classmethod
    def is_available(cls) -> bool:
        """Whether torch sees a usable CUDA device and driver (``torch.cuda.is_available()``)."""
        return torch.cuda.is_available()

    @classmethod
    def device_count(cls) -> int:
        """The GPUs this process can see (``CUDA_VISIBLE_DEVICES`` applies)."""
        return torch.cuda.device_count()

    non_blocking_copies = True  # copies go on the current stream; kernels after them wait

    def get_rng_state(self) -> Optional[Any]:
        """Every visible GPU's generator state, or ``None`` when this process never initialised
        CUDA (reading it would start CUDA on every device just to save nothing)."""
        # Initialising CUDA only to read its generators would cost seconds and memory on
        # every device; a process that never touched CUDA has nothing to keep.
        if not torch.cuda.is_initialized():
            return None
        return torch.cuda.get_rng_state_all()

    def set_rng_state(self, state: Any) -> None:
        """Restore the GPU generators; skipped when the checkpoint came from a machine with a
        different number of visible GPUs, whose states do not map one to one."""
        if state is not None and len(state) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state)

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` this process's current GPU, so that kernels and NCCL use the right one."""
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        """Hand cached GPU memory back to the driver between stages (``torch.cuda.empty_cache``)."""
        torch.cuda.empty_cache()

    def unsupported_precision_reason(self, precision) -> Optional[str]:
        """Refuses bfloat16 precisions on GPUs without bfloat16 support (before Ampere)."""
        if precision.name.startswith("bf16") and not torch.cuda.is_bf16_supported():
            return (
                f"precision={precision.name!r} needs a GPU with bfloat16 support "
                "(Ampere or newer); use '16-mixed' on this GPU"
            )
        return None
