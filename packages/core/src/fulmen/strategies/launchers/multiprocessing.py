"""``ddp_spawn`` / ``ddp_fork``: start the ranks with torch.multiprocessing.

For notebooks and interactive sessions, where there is no command to re-run. Each worker
rebuilds the Fabric/Trainer from the arguments it was created with (plugin managers and
process groups do not cross process boundaries), runs the function, and rank 0 sends its
result back; ``torch.multiprocessing`` stops every worker when one raises.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from fulmen.strategies.launchers import guards

GRACE_SECONDS = 3.0


def _worker(local_rank: int, function: Callable, args: tuple, kwargs: dict, env: dict, result_file: str) -> None:
    os.environ.update(env)
    nproc = int(env["FULMEN_NPROC"])
    node_rank = int(env.get("NODE_RANK", 0))
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["RANK"] = str(node_rank * nproc + local_rank)
    # multiprocessing children leave through os._exit, skipping atexit: close the group
    # here or gloo aborts the process when a peer disconnects first.
    try:
        result = function(*args, **kwargs)
    except BaseException as exc:
        guards.record_exception(node_rank * nproc + local_rank, exc)
        guards.destroy_process_group(failed=True)
        raise
    guards.destroy_process_group(failed=False)
    if local_rank == 0 and node_rank == 0:
        torch.save(result, result_file)


class MultiprocessingLauncher:
    starts_in_place = False

    def __init__(self, strategy, start_method: str = "spawn") -> None:
        self.strategy = strategy
        self.start_method = start_method

    def launch(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        nproc = self.strategy.num_processes
        num_nodes = self.strategy.num_nodes
        port = os.environ.get("MASTER_PORT") or str(guards.free_port())
        env = {
            "FULMEN_LAUNCHED": "1",
            "FULMEN_NPROC": str(nproc),
            "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": port,
            "WORLD_SIZE": str(nproc * num_nodes),
            "NODE_RANK": os.environ.get("NODE_RANK", "0"),
        }
        with tempfile.TemporaryDirectory(prefix="fulmen-spawn-") as tmp:
            result_file = str(Path(tmp) / "result.pt")
            context = mp.start_processes(
                _worker,
                args=(function, args, kwargs, env, result_file),
                nprocs=nproc,
                join=False,
                start_method=self.start_method,
            )
            # When one rank fails the others may sit in a collective, deaf to SIGTERM until it
            # times out: a short grace period, then SIGKILL, so the job ends in seconds.
            while not context.join(grace_period=GRACE_SECONDS):
                pass
            if not Path(result_file).exists():
                return None
            return torch.load(result_file, weights_only=False)  # written by our own rank 0 just now

    def teardown(self) -> None:
        pass
