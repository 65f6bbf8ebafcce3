"""Telling the user when the step graph keeps compiling.

XLA compiles a graph once per shape and control flow. A step that compiles again and again
(a last batch of another size, a Python ``if`` on a tensor's value, a ``.item()`` in the
step) is the commonest reason an XLA job is slow, and nothing fails: it only crawls. The
count comes from torch-xla's ``CompileTime`` metric, a host-side counter, so reading it
every step costs no device sync.
"""

from __future__ import annotations

import warnings
from typing import Optional

#: The first optimizer steps compile the step graphs (forward+backward, the optimizer's
#: first and later steps, the evaluation graph): not counted.
WARMUP_STEPS = 5


class RecompilationWarning(UserWarning):
    """The XLA step graph was compiled again after warm-up."""


def compile_count() -> int:
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    return int(data[0]) if data else 0


class CompileWatch:
    """Counts compilations across optimizer steps; warns once when they grow after warm-up."""

    def __init__(self, warmup_steps: int = WARMUP_STEPS) -> None:
        self.warmup_steps = warmup_steps
        self.steps = 0
        self.baseline: Optional[int] = None
        self.recompilations = 0
        self.warned = False

    def after_step(self) -> None:
        self.steps += 1
        if self.steps < self.warmup_steps:
            return
        count = compile_count()
        if self.baseline is None:
            self.baseline = count
            return
        if count > self.baseline:
            self.recompilations += count - self.baseline
            self.baseline = count
            if not self.warned:
                self.warned = True
                warnings.warn(
                    f"the XLA graph was compiled again at optimizer step {self.steps}, after "
                    f"{self.warmup_steps} warm-up steps: each new shape or Python branch on a tensor "
                    "value compiles a new graph and slows every step that meets it. Common causes: a "
                    "last batch of another size (DataLoader(drop_last=True)), variable-length inputs "
                    "(pad to fixed buckets), .item() or if/while on tensor values inside the step. "
                    "Set PT_XLA_DEBUG_LEVEL=2 to see which graph changed.",
                    RecompilationWarning,
                    stacklevel=2,
                )
