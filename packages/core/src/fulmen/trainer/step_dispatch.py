"""Making the Module's step the ``forward`` of what the strategy wraps.

DistributedDataParallel (and FSDP) hook into ``forward``: gradient synchronisation is only
prepared when the wrapped module's ``forward`` runs. The Trainer calls ``training_step``, not
``forward``, so the strategy wraps this small dispatcher instead of the Module itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class StepDispatcher(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.step_name = "training_step"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # ``_modules[...]`` skips nn.Module's ``__getattr__`` fallback (this runs every step).
        return getattr(self._modules["module"], self.step_name)(*args, **kwargs)
