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

    # XLA's generator advances its seed at every graph execution, random or not (an empty
    # torch_xla.sync() included). A resumed run executes other graphs than the run it
    # continues (setup, restore), so saving and restoring the seed alone would not give the
    # same dropout masks. Instead each training batch gets a seed derived from a base seed
    # and the batch's number, set just before the loop receives it: the masks then depend
    # only on (base, batches so far), which is what a checkpoint keeps.
    _seed_base: Optional[int] = None
    _training_batches: int = 0

    def setup_device(self, device: torch.device) -> None:
        if self._seed_base is None:
            import torch_xla.core.xla_model as xm

            self._seed_base = int(xm.get_rng_state())  # what the user's seed_everything left

    def reseed_for_training_batch(self) -> None:
        """Set the device seed for the next training batch (called by the XLA strategies)."""
        import torch_xla.core.xla_model as xm

        if self._seed_base is None:
            self._seed_base = int(xm.get_rng_state())
        xm.set_rng_state(_mix(self._seed_base, self._training_batches))
        self._training_batches += 1

    def get_rng_state(self) -> Optional[Any]:
        """The base seed and how many training batches were seeded from it."""
        if self._seed_base is None:
            return None
        return {"xla_seed_base": self._seed_base, "xla_training_batches": self._training_batches}

    def set_rng_state(self, state: Any) -> None:
        if isinstance(state, dict) and "xla_seed_base" in state:
            self._seed_base = int(state["xla_seed_base"])
            self._training_batches = int(state["xla_training_batches"])

    def unsupported_precision_reason(self, precision: Any) -> Optional[str]:
        name = getattr(precision, "name", str(precision))
        if name == "64-true" and runtime.device_type() != "TPU":
            return None  # PJRT CPU and GPU compute float64 natively
        return _REFUSED.get(name)


_MASK64 = (1 << 64) - 1


def _mix(base: int, index: int) -> int:
    """A well-spread 64-bit seed from ``(base, index)`` (splitmix64's finaliser)."""
    z = (base + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)
