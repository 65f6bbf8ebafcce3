"""Precision under DeepSpeed: the engine owns it, fulmen's precision object only names it.

DeepSpeed casts the module to float16/bfloat16 itself (its ``fp16``/``bf16`` config
blocks, filled from the Trainer's ``precision``), keeps float32 master weights inside its
ZeRO optimizer and, for float16, scales the loss with its own scaler, whose state is saved
in its checkpoint files. If fulmen's ``bf16-true`` also cast the module, the master copy
would be made from already rounded weights; if ``bf16-mixed`` also autocast, every matmul
would be cast twice. So the strategy swaps the user's precision object for this one, which
does only what the engine leaves to the framework: cast floating inputs to the module's
dtype. ``bf16-mixed`` and ``bf16-true`` therefore train the same way here (bfloat16
compute, float32 master weights), as in Lightning's DeepSpeed integration.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from fulmen.errors import FulmenConfigError
from fulmen.precision.base import Precision
from fulmen.utilities.apply import apply_to_tensors

#: fulmen precision name -> the dtype the engine computes in.
DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16}


class DeepSpeedPrecision(Precision):
    """Stands in for ``precision=name`` under DeepSpeed (see the module docstring)."""

    def __init__(self, name: str) -> None:
        if name not in DTYPES:
            raise FulmenConfigError(
                f"precision={name!r} is not supported by the DeepSpeed strategies; use one of "
                f"{', '.join(repr(n) for n in DTYPES)} ('16-true' and '64-true' have no DeepSpeed engine mode)"
            )
        self.name = name
        self.dtype: Optional[torch.dtype] = DTYPES[name]


class DeepSpeedHalfPrecision(DeepSpeedPrecision):
    """``bf16-*`` and ``16-mixed``: the engine computes in half precision."""

    def convert_input(self, data: Any) -> Any:
        """Floating inputs in the engine's dtype (a bfloat16 layer refuses float32 input);
        integer and bool tensors (labels, masks) keep theirs."""
        dtype = self.dtype
        return apply_to_tensors(data, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)


def for_deepspeed(precision: Any) -> Optional[DeepSpeedPrecision]:
    """The DeepSpeed stand-in for whatever precision the connector chose (None stays None)."""
    if precision is None or isinstance(precision, DeepSpeedPrecision):
        return precision
    name = getattr(precision, "name", "32-true")
    # 32-true keeps the base class's no-op hooks, which Fabric's forward skips entirely.
    return DeepSpeedPrecision(name) if DTYPES.get(name, 0) is None else DeepSpeedHalfPrecision(name)
