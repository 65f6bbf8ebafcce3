"""One seed for Python, NumPy (when installed) and torch, and per-worker seeds derived from it."""

from __future__ import annotations

import os
import random
from typing import Optional

import torch

SEED_ENV = "FULMEN_GLOBAL_SEED"
SEED_WORKERS_ENV = "FULMEN_SEED_WORKERS"
_MAX_SEED = 2**32 - 1


def seed_everything(seed: Optional[int] = None, workers: bool = False) -> int:
    """Seed Python's, NumPy's (when installed) and torch's generators (every CUDA device
    included) and return the seed used: call it once at the top of a script for a
    reproducible run.

    The seed goes into the environment (``FULMEN_GLOBAL_SEED``), so that processes started
    later (DDP ranks, dataloader workers) and fulmen's distributed samplers derive their
    streams from it.

    Args:
        seed: An int in ``0..2**32 - 1``; ``None`` takes ``FULMEN_GLOBAL_SEED`` if set, else
            a random seed (returned, so it can be printed and reused).
        workers: Lightning's flag, kept for compatibility: it is recorded in
            ``FULMEN_SEED_WORKERS`` for processes started later.
    """
    if seed is None:
        env = os.environ.get(SEED_ENV)
        seed = int(env) if env is not None else random.randint(0, _MAX_SEED)
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0..{_MAX_SEED}; numpy cannot take it")
    os.environ[SEED_ENV] = str(seed)
    os.environ[SEED_WORKERS_ENV] = "1" if workers else "0"
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def worker_init_fn(worker_id: int) -> None:
    """Give each dataloader worker its own, reproducible Python/NumPy streams."""
    base = torch.initial_seed() % _MAX_SEED
    random.seed(base + worker_id)
    try:
        import numpy as np

        np.random.seed((base + worker_id) % _MAX_SEED)
    except ImportError:
        pass
