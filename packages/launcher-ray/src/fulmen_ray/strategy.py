"""``strategy="ray"``: data parallel over the worker group of a Ray Train job.

fulmen's own ``ddp`` starts processes and counts them as ``devices x num_nodes``; under Ray
the worker group is the layout (Ray places workers on nodes as resources allow, one device
each), so this strategy takes its device and its world from Ray instead of from
``devices=``/``num_nodes=``, and joins the process group ``TorchTrainer`` already formed.
"""

from __future__ import annotations

from typing import Any

import torch

from fulmen.errors import FulmenConfigError
from fulmen.strategies.ddp import DDPStrategy
from fulmen_ray.environment import RayEnvironment


def worker_device() -> torch.device:
    """The device Ray assigned to this worker: its GPU with ``use_gpu=True``, else the CPU."""
    import ray.train.torch

    return ray.train.torch.get_device()


class RayDDPStrategy(DDPStrategy):
    """``DistributedDataParallel`` across the workers of a Ray Train job: one process and one
    device per worker, ranks from :class:`~fulmen_ray.environment.RayEnvironment`, the
    process group (gloo on CPU workers, NCCL on GPU workers) formed by Ray. Keyword arguments
    are :class:`~fulmen.strategies.ddp.DDPStrategy`'s. Use it inside the training function
    of a Ray Train job, for a Trainer or for Fabric."""

    name = "ray"

    def __init__(self, **kwargs: Any) -> None:
        if not RayEnvironment.detect():
            raise FulmenConfigError(
                'strategy="ray" runs inside a Ray Train worker: start the training function with '
                "fulmen_ray.run(train_fn, num_workers=...) or ray.train.torch.TorchTrainer; outside Ray "
                'use strategy="ddp"'
            )
        kwargs.setdefault("cluster_environment", RayEnvironment())
        kwargs.setdefault("parallel_devices", [worker_device()])
        super().__init__(**kwargs)

    @property
    def num_processes(self) -> int:
        """One process per worker on each worker's node view."""
        return 1

    def _check_layout(self) -> None:
        # The worker group is the layout; devices=/num_nodes= describe fulmen's own launcher.
        pass
