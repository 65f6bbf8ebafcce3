"""``accelerator="xla"``: whatever device PJRT drives (TPU; CPU for tests; GPU)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from fulmen.accelerators.base import Accelerator

from fulmen_xla import runtime

# Precisions XLA cannot honour, with what to use instead.
_REFUSED = {
    "16-mixed": "float16 autocast with a gradient scaler is a CUDA technique; XLA devices compute in "
                "bfloat16: use precision='bf16-mixed' (or 'bf16-true')",
    "16-true": "float16 parameters are not supported on XLA devices; use precision='bf16-true'",
    "64-true": "float64 is emulated slowly or not at all on TPUs; use '32-true'",
}


class XLAAccelerator(Accelerator):
    """Devices of the PJRT runtime, whatever their type (``PJRT_DEVICE=TPU|CPU|CUDA``).

    Every process of a job sees one XLA device, ``xla:0`` (torch-xla's launcher gives each
    process its chip), so ``devices=N`` is how many processes (or, under ``xla_spmd``, how
    many devices one process drives) and indices name devices of the host. The device
    count is read from the environment without starting the runtime, which
    ``torch_xla.launch`` requires of the process that launches.
    """

    name = "xla"
    device_type = "xla"
    # Above the CPU, below CUDA: "auto" picks XLA on a TPU host or where PJRT_DEVICE says so.
    auto_priority = 10
    non_blocking_copies = True  # transfers are asynchronous; the graph waits for its inputs

    # Read by `fulmen plugins` on the registered class.
    unavailable_reason = staticmethod(runtime.unavailable_reason)
    backend = staticmethod(runtime.backend_description)

    @classmethod
    def is_available(cls) -> bool:
        """torch-xla importable and a PJRT device configured (``PJRT_DEVICE``) or TPU chips present."""
        return cls.device_count() > 0

    @classmethod
    def device_count(cls) -> int:
        return runtime.local_device_count()

    @classmethod
    def auto_strategy(cls, num_processes: int) -> Optional[str]:
        return "xla" if num_processes > 1 else "single_xla"

    @classmethod
    def make_device(cls, index: int) -> torch.device:
        # Not torch_xla.device(index): that would start the runtime in the launching process.
        return torch.device("xla", index)

    def get_rng_state(self) -> Optional[Any]:
        """The XLA generator's seed (torch-xla keeps one integer per device)."""
        if not runtime.is_started():
            return None
        import torch_xla.core.xla_model as xm

        return {"xla_seed": int(xm.get_rng_state())}

    def set_rng_state(self, state: Any) -> None:
        if isinstance(state, dict) and "xla_seed" in state:
            import torch_xla.core.xla_model as xm

            xm.set_rng_state(int(state["xla_seed"]))

    def unsupported_precision_reason(self, precision: Any) -> Optional[str]:
        name = getattr(precision, "name", str(precision))
        if name == "64-true" and runtime.device_type() != "TPU":
            return None  # PJRT CPU and GPU compute float64 natively
        return _REFUSED.get(name)
