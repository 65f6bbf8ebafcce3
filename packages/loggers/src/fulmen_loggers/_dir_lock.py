"""The delivery directory's lock: one process drains a spool at a time (a live training run,
or ``fulmen loggers replay`` once that run is gone). ``flock`` is released by the kernel when
its holder dies, so a crashed run never leaves the directory locked."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Optional

from fulmen_loggers._records import LOCK_FILE


def try_lock(directory: Path, wait: float = 0.0) -> Optional[int]:
    """The delivery directory's lock, waiting up to ``wait`` seconds; None if a live process
    keeps holding it."""
    fd = os.open(Path(directory) / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def unlock(fd: int) -> None:
    """Release a lock :func:`try_lock` took, and close its descriptor."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
