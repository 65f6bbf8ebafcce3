"""``ddp``, ``ddp_spawn``, ``ddp_fork``: data parallel training on ``torch.distributed``.

One process per device. Who starts the processes depends on where we run: under torchrun,
srun, mpirun or jsrun they already exist and the cluster environment says who we are;
otherwise fulmen starts them itself — by re-running the user's command (``ddp``, like a
built-in torchrun), or with torch.multiprocessing (``ddp_spawn``, ``ddp_fork``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta
from typing import Any, ContextManager, Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fulmen.environments.local import LocalEnvironment
from fulmen.errors import FulmenConfigError
from fulmen.strategies.base import Strategy
from fulmen.strategies.launchers import guards
from fulmen.utilities.rank_zero import set_rank

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "mean": dist.ReduceOp.SUM}
DEFAULT_TIMEOUT = timedelta(minutes=30)


def _timeout(value: Union[timedelta, float, int, None]) -> timedelta:
    if value is None:
        env = os.environ.get("FULMEN_DIST_TIMEOUT")
        return timedelta(seconds=float(env)) if env else DEFAULT_TIMEOUT
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


class DDPStrategy(Strategy):
    """Data parallel: one process per device, gradients all-reduced by
    ``DistributedDataParallel``; the base class of fulmen's other multi-process strategies
    (``fulmen-strategy-fsdp`` subclasses it), and the one to subclass for a new one.

    ``start_method``: ``"popen"`` re-runs the user's command for the other local ranks
    (``ddp``); ``"spawn"``/``"fork"``/``"forkserver"`` start them with torch.multiprocessing.
    ``timeout`` (or ``FULMEN_DIST_TIMEOUT`` seconds) bounds every collective, so a lost rank
    ends the job instead of hanging it. Other keyword arguments go to
    ``DistributedDataParallel``.
    """

    name = "ddp"

    def __init__(
        self,
        accelerator=None,
        precision=None,
        checkpoint_io=None,
        cluster_environment=None,
        parallel_devices: Optional[List[torch.device]] = None,
        process_group_backend: Optional[str] = None,
        timeout: Union[timedelta, float, None] = None,
        start_method: str = "popen",
        find_unused_parameters: bool = False,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = False,
        sync_batchnorm: bool = False,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(accelerator, precision, checkpoint_io, cluster_environment, parallel_devices)
        if start_method not in ("popen", "spawn", "fork", "forkserver"):
            raise FulmenConfigError(f"DDPStrategy(start_method={start_method!r}); use 'popen', 'spawn', 'fork' or 'forkserver'")
        self.process_group_backend = process_group_backend
        self.timeout = _timeout(timeout)
        self.start_method = start_method
        self.sync_batchnorm = sync_batchnorm
        self.ddp_kwargs = dict(
            find_unused_parameters=find_unused_parameters,
            static_graph=static_graph,
            gradient_as_bucket_view=gradient_as_bucket_view,
            **ddp_kwargs,
        )
        self._launcher = None
        self._environment_ready = False
        self._processes_started = False

    # ------------------------------------------------------------------ process layout
    @property
    def num_processes(self) -> int:
        """Processes on this node (one per device)."""
        return len(self.parallel_devices) if self.parallel_devices else 1

    @property
    def world_size(self) -> int:
        env = self.cluster_environment
        if env is not None and (env.creates_processes_externally or os.environ.get("FULMEN_LAUNCHED")):
            return env.world_size()
        return self.num_processes * self.num_nodes

    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank() if self.cluster_environment is not None else 0

    @property
    def local_rank(self) -> int:
        return self.cluster_environment.local_rank() if self.cluster_environment is not None else 0

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank() if self.cluster_environment is not None else 0

    @property
    def root_device(self) -> torch.device:
        devices = self.parallel_devices or [torch.device("cpu")]
        return devices[self.local_rank % len(devices)]

    @property
    def launcher(self):
        """The launcher that still has to start processes, or None if they all exist."""
        if not self._needs_launch():
            return None  # e.g. inside a rank that a launcher started
        if self._launcher is None:
            from fulmen.strategies.launchers import MultiprocessingLauncher, SubprocessScriptLauncher

            if self.start_method == "popen":
                self._launcher = SubprocessScriptLauncher(self)
            else:
                self._launcher = MultiprocessingLauncher(self, self.start_method)
        return self._launcher

    def _needs_launch(self) -> bool:
        env = self.cluster_environment
        if env is None or env.creates_processes_externally or os.environ.get("FULMEN_LAUNCHED"):
            return False
        return self.num_processes > 1

    def __getstate__(self) -> Dict[str, Any]:
        # A strategy object given to the Trainer travels to spawned ranks; its launcher
        # belongs to the launching process only.
        state = dict(self.__dict__)
        state["_launcher"] = None
        return state

    # ------------------------------------------------------------------ setup
    def setup_environment(self) -> None:
        """Start the other local ranks (first time, ``ddp``), check the layout against the cluster environment, join the process group."""
        self.fill_defaults()
        env = self.cluster_environment
        if isinstance(env, LocalEnvironment):
            env.num_processes, env.num_nodes = self.num_processes, self.num_nodes
        if not self._processes_started:  # once per job; later stages only rejoin the group
            launcher = self.launcher
            if launcher is not None and launcher.starts_in_place:
                launcher.start_other_processes()  # ddp: re-run the command for local ranks 1..n-1
            self._check_layout()
            if os.environ.get(guards.ENV_PARENT_PID) and self.local_rank != 0:
                guards.install_child_guards(self.global_rank)
            self._processes_started = True
        self.accelerator.setup_device(self.root_device)
        self.precision.setup(self.root_device)
        set_rank(self.global_rank)  # rank_zero_only decides by it, also in spawned ranks
        self._init_process_group()
        self._environment_ready = True

    def _check_layout(self) -> None:
        env = self.cluster_environment
        expected = self.num_processes * self.num_nodes
        if env.creates_processes_externally and env.world_size() != expected:
            raise FulmenConfigError(
                f"the {env.name or type(env).__name__} environment started {env.world_size()} processes, but "
                f"devices={self.num_processes} x num_nodes={self.num_nodes} = {expected}; make them match "
                "(for example srun --ntasks-per-node=devices, torchrun --nproc_per_node=devices)"
            )

    def _backend(self) -> str:
        if self.process_group_backend:
            return self.process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def _init_process_group(self) -> None:
        if dist.is_initialized():
            return
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = str(env.main_address)
        os.environ["MASTER_PORT"] = str(env.main_port)
        dist.init_process_group(
            self._backend(), rank=self.global_rank, world_size=self.world_size, timeout=self.timeout,
        )
        # Leaving with the group alive lets gloo's threads abort the process (SIGABRT) when
        # a peer disconnects first; close it in an orderly way at exit.
        atexit.register(guards.destroy_process_group)

    @property
    def supports_inference_mode(self) -> bool:
        """gloo's collectives refuse inference tensors (metric syncing in evaluation)."""
        return self._backend() != "gloo"

    def enable_sync_batchnorm(self) -> None:
        """``Trainer(sync_batchnorm=True)``: BatchNorm layers become SyncBatchNorm at setup."""
        self.sync_batchnorm = True

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Convert for precision, optionally to SyncBatchNorm, move, and wrap in ``DistributedDataParallel``."""
        module = self.precision.convert_module(module)
        if self.sync_batchnorm:
            if self.root_device.type == "cpu":
                raise FulmenConfigError(
                    "sync_batchnorm=True needs CUDA devices (torch's SyncBatchNorm does not run on the "
                    "CPU); set sync_batchnorm=False"
                )
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module = module.to(self.root_device)
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **self.ddp_kwargs)

    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> ContextManager:
        """DDP's ``no_sync()``: accumulation micro-batches skip the all-reduce."""
        if enabled and isinstance(module, DistributedDataParallel):
            return module.no_sync()
        return contextlib.nullcontext()

    @property
    def distributed_sampler_kwargs(self) -> Dict[str, int]:
        """``num_replicas`` and ``rank`` for this process's share of the data."""
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    def process_dataloader(self, dataloader: Any) -> Any:
        """Give the loader a distributed sampler (a resumable one for shuffled data)."""
        from fulmen.dataloading import distribute

        return distribute(dataloader, **self.distributed_sampler_kwargs)

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        op = _REDUCE_OPS.get(reduce_op)
        if op is None:
            raise FulmenConfigError(f"reduce_op={reduce_op!r}; use 'mean', 'sum', 'max' or 'min'")
        out = tensor.detach().clone()
        if out.device.type == "cpu" and self._backend() == "nccl":
            out = out.to(self.root_device)
        dist.all_reduce(out, op=op)
        if reduce_op == "mean":
            out = out / self.world_size if out.is_floating_point() else out // self.world_size
        return out.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        if sync_grads:
            import torch.distributed.nn.functional as dist_fn

            return torch.stack(dist_fn.all_gather(tensor))
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    def all_gather_object(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self, name: Optional[str] = None) -> None:
        if not dist.is_initialized():
            return
        if self._backend() == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    # ------------------------------------------------------------------ state
    def module_state_dict(self, module: nn.Module) -> Dict[str, Any]:
        """The unwrapped module's state (no ``module.`` prefix from the DDP wrapper)."""
        if isinstance(module, DistributedDataParallel):
            module = module.module
        return module.state_dict()

    def teardown(self) -> None:
        """After a stage: the devices and the launcher's bookkeeping are released. The
        process group is not: it belongs to the job, and what users do after ``fit``
        (``trainer.save_checkpoint``, ``trainer.test``, their own collectives, a group they
        created before the Trainer) needs it. It is left in an orderly way at exit."""
        super().teardown()
        if self._launcher is not None:
            self._launcher.teardown()