"""``strategy="xla"``: one process per XLA device, gradients all-reduced before each step.

Two ways to move gradients, chosen by where the job runs:

* **XLA collectives** (TPU, GPU; also one process on the CPU). The processes are started by
  ``torch_xla.launch`` (one per chip; under torchrun it runs in place), gradients are summed
  by ``xm.reduce_gradients`` inside the step's graph, and fulmen's collectives go through
  ``xm.all_reduce``/``xm.all_gather``/``xm.rendezvous``.
* **Host collectives** (several processes on ``PJRT_DEVICE=CPU``). PJRT's CPU client cannot
  run a collective across processes (torch-xla's own CPU multi-process tests skip them; a
  real attempt waits for the peers until it times out), so fulmen starts the processes as
  it does for ``ddp`` and sums gradients over gloo on the host after the step's sync. It
  is slower, and exists so that the launcher, data split, logging and checkpoints of this
  strategy are tested for real on machines without TPUs.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from fulmen.errors import FulmenConfigError
from fulmen.strategies.ddp import DDPStrategy
from fulmen.strategies.launchers import guards

from fulmen_xla import runtime
from fulmen_xla.common import XLALoopMixin

COLLECTIVES = ("auto", "xla", "host")


class XLAStrategy(XLALoopMixin, DDPStrategy):
    """Data parallel on XLA devices. ``collectives="auto"`` uses XLA's own collectives,
    except for several processes on the PJRT CPU device, where it must use the host
    (``"host"``: gloo; see the module's docstring). ``start_method`` applies to host
    collectives only (``"popen"`` re-runs your command, as ``ddp`` does)."""

    name = "xla"
    supports_inference_mode = False

    def __init__(self, collectives: str = "auto", **kwargs: Any) -> None:
        if collectives not in COLLECTIVES:
            raise FulmenConfigError(f"XLAStrategy(collectives={collectives!r}); use one of {', '.join(COLLECTIVES)}")
        super().__init__(**kwargs)
        self.collectives = collectives
        self._xla_init()

    @property
    def uses_host_collectives(self) -> bool:
        if self.collectives != "auto":
            return self.collectives == "host"
        return runtime.device_type() == "CPU" and self.num_processes * self.num_nodes > 1

    # ------------------------------------------------------------------ processes
    @property
    def launcher(self):
        if self.uses_host_collectives:
            return super().launcher
        if os.environ.get("FULMEN_LAUNCHED") or runtime.is_started():
            return None  # inside a process torch_xla.launch started
        if self._launcher is None:
            from fulmen_xla.launcher import XLALauncher

            self._launcher = XLALauncher(self)
        return self._launcher

    @property
    def world_size(self) -> int:
        if self.uses_host_collectives:
            return super().world_size
        import torch_xla.runtime as xr

        return xr.world_size()

    @property
    def global_rank(self) -> int:
        if self.uses_host_collectives:
            return super().global_rank
        import torch_xla.runtime as xr

        return xr.global_ordinal()

    @property
    def local_rank(self) -> int:
        if self.uses_host_collectives:
            return super().local_rank
        import torch_xla.runtime as xr

        return xr.local_ordinal()

    @property
    def node_rank(self) -> int:
        if self.uses_host_collectives:
            return super().node_rank
        import torch_xla.runtime as xr

        return xr.host_index()

    def setup_environment(self) -> None:
        if self.uses_host_collectives:
            super().setup_environment()  # fulmen's launcher, gloo
            return
        self.fill_defaults()
        if os.environ.get(guards.ENV_PARENT_PID):
            guards.install_child_guards(self.global_rank)
        self._processes_started = True
        self.accelerator.setup_device(self.root_device)
        self.precision.setup(self.root_device)
        if self.world_size > 1 and not dist.is_initialized():
            import torch_xla.distributed.xla_backend  # noqa: F401  registers the "xla" backend

            dist.init_process_group("xla", init_method="xla://")
        self._environment_ready = True

    # ------------------------------------------------------------------ model
    def _place_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move the module; no wrapper: gradients are reduced at the step, not in hooks."""
        module = self.precision.convert_module(module)
        return module.to(self.root_device)

    def no_backward_sync(self, module, enabled: bool = True):
        import contextlib

        return contextlib.nullcontext()  # nothing is reduced during backward anyway

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.world_size <= 1:
            return
        if not self.uses_host_collectives:
            import torch_xla.core.xla_model as xm

            xm.reduce_gradients(optimizer)
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        runtime.sync()
        flat = torch.cat([g.detach().cpu().reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            count = grad.numel()
            grad.copy_(flat[offset:offset + count].view_as(grad).to(grad.dtype).to(grad.device))
            offset += count

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        if self.world_size <= 1:
            return tensor
        if self.uses_host_collectives:
            return super().all_reduce(tensor.detach().cpu(), reduce_op).to(tensor.device)
        import torch_xla.core.xla_model as xm

        ops = {"sum": xm.REDUCE_SUM, "mean": xm.REDUCE_SUM, "max": xm.REDUCE_MAX, "min": xm.REDUCE_MIN}
        if reduce_op not in ops:
            raise FulmenConfigError(f"reduce_op={reduce_op!r}; use 'mean', 'sum', 'max' or 'min'")
        out = xm.all_reduce(ops[reduce_op], tensor.detach().to(self.root_device))
        if reduce_op == "mean":
            out = out / self.world_size if out.is_floating_point() else out // self.world_size
        return out.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        if self.world_size <= 1:
            return tensor.unsqueeze(0)
        if self.uses_host_collectives:
            if sync_grads:
                raise FulmenConfigError("all_gather(sync_grads=True) needs XLA collectives; the PJRT CPU "
                                        "device with several processes gathers on the host without gradients")
            return super().all_gather(tensor.detach().cpu()).to(tensor.device)
        import torch_xla.core.xla_model as xm

        return xm.all_gather(tensor.unsqueeze(0).to(self.root_device), dim=0)

    def all_gather_object(self, obj: Any) -> List[Any]:
        if self.world_size <= 1:
            return [obj]
        if self.uses_host_collectives:
            return super().all_gather_object(obj)
        import torch_xla.core.xla_model as xm

        # The peers are this job's own processes, as in torch.distributed's object collectives.
        payloads = xm.rendezvous("fulmen.all_gather_object", pickle.dumps(obj))
        return [pickle.loads(payload) for payload in payloads]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if self.world_size <= 1:
            return obj
        if self.uses_host_collectives:
            return super().broadcast(obj, src)
        return self.all_gather_object(obj if self.global_rank == src else None)[src]

    def barrier(self, name: Optional[str] = None) -> None:
        if self.world_size <= 1:
            return
        if self.uses_host_collectives:
            return super().barrier(name)
        import torch_xla.core.xla_model as xm

        xm.rendezvous(name or "fulmen.barrier")
