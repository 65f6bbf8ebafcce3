"""``Fabric.rank_zero_first``: one process runs a block (a download, a cache build) before
the others run it, which then find its result on disk.

The wait may take as long as the download does, far longer than the strategy's collective
timeout (30 minutes by default), which exists to end a job whose peer died. So the waiting
uses a process group of its own, on gloo (a CPU barrier needs no device), with no practical
timeout; a rank that dies meanwhile still ends the job through fulmen's launcher or
torchrun, which stop the remaining ranks.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Iterator

#: Longer than any download; what gloo accepts (milliseconds in a 64-bit integer).
PATIENT_TIMEOUT = timedelta(days=10000)


@contextlib.contextmanager
def first_then_others(strategy: Any, goes_first: bool) -> Iterator[None]:
    """Run the block on the ranks where ``goes_first`` is True, then on the others; every
    rank must enter (the barrier is collective)."""
    import torch.distributed as dist

    if strategy.world_size == 1:
        yield
        return
    if not (dist.is_available() and dist.is_initialized()):
        # A strategy that forms no torch.distributed group: its own barrier, own timeout.
        if not goes_first:
            strategy.barrier("rank_zero_first")
        yield
        if goes_first:
            strategy.barrier("rank_zero_first")
        return
    group = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
    try:
        if not goes_first:
            dist.barrier(group=group)
        yield
        if goes_first:
            dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)
