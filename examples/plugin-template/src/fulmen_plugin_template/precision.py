"""A precision: a bundle of hooks with no-op defaults in ``fulmen.precision.Precision``.

``32-tf32`` keeps float32 weights and lets NVIDIA GPUs use TF32 tensor cores for matmuls and
convolutions inside the forward pass; elsewhere (the CPU) it is plain float32. The flags are
put back on exit, so code outside the training step is not affected.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch

from fulmen.precision.base import Precision


class TF32Precision(Precision):
    name = "32-tf32"

    def forward_context(self) -> ContextManager:
        return _tf32()


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
