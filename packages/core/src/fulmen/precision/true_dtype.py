"""``64-true``, ``bf16-true`` and ``16-true``: parameters and inputs in one dtype."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator

import torch
from torch import nn

from fulmen.precision.base import Precision
from fulmen.utilities.apply import apply_to_tensors


class _TrueDtypePrecision(Precision):
    """Shared by the ``*-true`` modes: parameters, floating inputs and tensors created inside
    the step all use one dtype."""

    dtype: torch.dtype = torch.float32

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast every parameter and buffer to the mode's dtype."""
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        """Cast floating tensors of the batch; integer and bool tensors (labels, masks) keep theirs."""
        dtype = self.dtype
        return apply_to_tensors(
            data, lambda t: t.to(dtype) if torch.is_floating_point(t) else t
        )

    def module_init_context(self) -> ContextManager:
        """Build the model directly in the mode's dtype (no float32 copy on the way)."""
        return _default_dtype(self.dtype)

    def forward_context(self) -> ContextManager:
        """Make the mode's dtype the default during the step, so tensors created there match the
        parameters."""
        # As in Lightning: tensors made inside the step (zero states, masks) match the params.
        return _default_dtype(self.dtype)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class DoublePrecision(_TrueDtypePrecision):
    """``64-true``: float64 parameters and inputs, for numerical checks where float32 rounding
    matters; slow, and not available on MPS."""

    name = "64-true"
    dtype = torch.float64


class HalfPrecision(_TrueDtypePrecision):
    """bfloat16 or float16 parameters without a float32 master copy (memory over accuracy)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"HalfPrecision takes torch.bfloat16 or torch.float16, not {dtype}")
        self.dtype = dtype
        self.name = "bf16-true" if dtype == torch.bfloat16 else "16-true"
