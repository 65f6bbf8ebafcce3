"""A strategy: subclass one of fulmen's and override what differs.

``SingleDeviceStrategy`` already moves modules and batches, runs the precision's hooks and
saves checkpoints; this one only adds timing around ``optimizer_step``. A data-parallel
strategy would subclass ``fulmen.strategies.ddp.DDPStrategy`` the same way.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

import torch

from fulmen.strategies.single_device import SingleDeviceStrategy


class TimedSingleDeviceStrategy(SingleDeviceStrategy):
    name = "timed_single_device"

    def __init__(self, warmup_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warmup_steps = warmup_steps
        self.step_times: List[float] = []
        self._steps = 0

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
        start = time.perf_counter()
        result = super().optimizer_step(optimizer, closure)
        self._steps += 1
        if self._steps > self.warmup_steps:  # the first steps include allocator warm-up
            self.step_times.append(time.perf_counter() - start)
        return result
