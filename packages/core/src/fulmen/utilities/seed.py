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
    """Seed every generator a training run draws from and return the seed used.

    The seed goes into the environment so that processes started later (DDP workers,
    dataloader workers) derive the same streams.
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
