"""Starting the processes of ``strategy="xla"`` with ``torch_xla.launch``.

torch-xla knows how many processes a host wants (one per TPU chip, its env for each) and
refuses to start them once this process has touched a device, so it is the launcher. The
work function and its arguments travel to each process as ``ddp_spawn``'s do; rank 0's
result comes back through a file, and a rank's exception is recorded for the report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from fulmen.errors import FulmenConfigError
from fulmen.strategies.launchers import guards

from fulmen_xla import runtime


def _worker(index: int, function: Callable, args: tuple, kwargs: dict, result_file: str) -> None:
    os.environ["FULMEN_LAUNCHED"] = "1"
    try:
        result = function(*args, **kwargs)
    except BaseException as exc:
        guards.record_exception(index, exc)
        raise
    if index == 0:
        torch.save(result, result_file)


class XLALauncher:
    starts_in_place = False

    def __init__(self, strategy) -> None:
        self.strategy = strategy

    def launch(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        if runtime.is_started():
            raise FulmenConfigError(
                "strategy='xla' starts its processes with torch_xla.launch, which cannot run once this "
                "process has used an XLA device; create the Trainer/Fabric before touching torch_xla.device(), "
                "or use strategy='single_xla'"
            )
        available = runtime.local_device_count()
        if self.strategy.num_processes not in (1, available):
            raise FulmenConfigError(
                f"strategy='xla' runs one process per device and torch_xla.launch starts one on every device "
                f"of the host ({available}); devices={self.strategy.num_processes} cannot be honoured. Use "
                f"devices={available} (or 'auto'), devices=1, or limit the devices torch-xla sees "
                "(TPU_VISIBLE_CHIPS / TPU_PROCESS_BOUNDS on TPU)"
            )
        import torch_xla

        with tempfile.TemporaryDirectory(prefix="fulmen-xla-") as tmp:
            result_file = str(Path(tmp) / "result.pt")
            torch_xla.launch(_worker, args=(function, args, kwargs, result_file))
            if not Path(result_file).exists():
                return None
            return torch.load(result_file, weights_only=False)  # written by our own rank 0 just now

    def teardown(self) -> None:
        pass
