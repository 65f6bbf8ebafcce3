"""Making sure a multi-process job never hangs: children die with their parent, and every
failure is reported by rank with its exception.

A rank blocked in a collective cannot notice that a peer died until the process group's
timeout (30 minutes by default). So the process that launched the others watches them and
ends the whole job at once, and each child watches its parent. Leaving the process group in
an orderly way (:func:`destroy_process_group`) lives here too: the launchers call it from
their workers, and they must not import a strategy to do so (the strategy imports them).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Optional

ENV_ERROR_DIR = "FULMEN_ERROR_DIR"
ENV_PARENT_PID = "FULMEN_PARENT_PID"
EXIT_BARRIER_SECONDS = 30
_installed = False
# Launchers of this process that started children; signals are passed on to them.
ACTIVE_LAUNCHERS: list = []


def forward_signal(signum: int) -> None:
    for launcher in ACTIVE_LAUNCHERS:
        launcher.forward(signum)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_file(directory: str, rank: int) -> Path:
    return Path(directory) / f"rank_{rank}.json"


def record_exception(rank: int, exc: BaseException) -> None:
    directory = os.environ.get(ENV_ERROR_DIR)
    if not directory:
        return
    payload = {
        "rank": rank,
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:],
    }
    target = error_file(directory, rank)
    partial = target.with_suffix(".partial")
    try:  # renamed into place, so that the launcher never reads half a record
        partial.write_text(json.dumps(payload))
        os.replace(partial, target)
    except OSError:
        pass


def describe_failure(directory: Optional[str], rank: int, exit_code: int) -> str:
    if directory:
        path = error_file(directory, rank)
        if path.exists():
            try:
                info = json.loads(path.read_text())
                return f"rank {rank} failed with {info['type']}: {info['message']}"
            except (OSError, ValueError, KeyError):
                pass
    if exit_code < 0:
        import signal

        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"rank {rank} was killed by {name}"
    return f"rank {rank} exited with code {exit_code}"


def install_child_guards(rank: int) -> None:
    """In a launched child: record an uncaught exception for the launcher, and exit when the
    launcher (the parent) is gone."""
    global _installed
    if _installed:
        return
    _installed = True
    previous_hook = sys.excepthook

    def hook(exc_type, exc, tb):
        record_exception(rank, exc)
        previous_hook(exc_type, exc, tb)

    sys.excepthook = hook
    parent = os.environ.get(ENV_PARENT_PID)
    if parent:
        parent_pid = int(parent)

        def watch_parent() -> None:
            while True:
                if os.getppid() != parent_pid:
                    sys.stderr.write(f"fulmen: rank {rank}: the launching process (pid {parent_pid}) is gone; exiting\n")
                    sys.stderr.flush()
                    os._exit(1)
                time.sleep(0.5)

        threading.Thread(target=watch_parent, name="fulmen-parent-watch", daemon=True).start()


def destroy_process_group(failed: Optional[bool] = None) -> None:
    """Leave the process group together, then destroy it.

    A rank that tears down while a peer still talks to it gets its gloo threads aborted
    ("terminate called without an active exception"), so unless the job is failing
    (``failed``; by default: an uncaught exception was recorded) the ranks meet at a
    barrier first. A failing rank skips it: its peers may already be gone. Registered with
    ``atexit`` by the strategy, and called by the multiprocessing launcher's workers, which
    leave through ``os._exit`` and so skip ``atexit``.
    """
    import torch.distributed as dist  # only a job that has a process group pays for this import

    if not (dist.is_available() and dist.is_initialized()):
        return
    if failed is None:
        failed = hasattr(sys, "last_value") or hasattr(sys, "last_exc")
    try:
        if not failed:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=EXIT_BARRIER_SECONDS))
            else:
                dist.barrier()
        dist.destroy_process_group()
    except Exception:  # the job is ending; a peer may already be gone
        pass
