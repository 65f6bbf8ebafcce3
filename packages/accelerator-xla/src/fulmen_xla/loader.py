"""Batches reach the XLA device through torch-xla's background loader.

``ParallelLoader`` pulls host batches on one thread and copies them to the device on
another, so the next batch is already there when the step asks for it; and it cuts the lazy
graph (``torch_xla.sync()``) as each batch is handed out, so one step is one graph. It takes
any iterable, which is what lets it sit behind fulmen's resumable loader: the loader hands
it the pass's host iterator and counts batches only as the loop receives them.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

# torch-xla's own defaults. Smaller queues (4 and 2) were measured 16% slower per step on
# the PJRT CPU device (benchmarks/xla_overhead.py): the copy thread stalled behind the step.
LOADER_PREFETCH = 16
DEVICE_PREFETCH = 8


class _Once:
    """The iterable ParallelLoader wants, over an iterator that already exists."""

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __len__(self) -> int:  # ParallelLoader asks; fulmen's loader keeps the real length
        return 0


def device_batches(batches: Iterator[Any], device: torch.device, convert_input, input_sharding: Optional[Any] = None
                   ) -> Iterator[Any]:
    """Yield ``batches`` on ``device`` (sharded by ``input_sharding`` under SPMD), each
    through ``convert_input`` (the precision's cast); the threads stop when the pass ends
    or the loop stops early."""
    from torch_xla.distributed.parallel_loader import ParallelLoader

    loader = ParallelLoader(_Once(batches), [device], loader_prefetch_size=LOADER_PREFETCH,
                            device_prefetch_size=DEVICE_PREFETCH, input_sharding=input_sharding)
    try:
        for batch in loader.per_device_loader(device):
            yield convert_input(batch)
    finally:
        loader.close()
