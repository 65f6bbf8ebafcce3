"""The strategy contract: how a module, its optimizers and its data meet the devices.

A strategy owns an accelerator, a precision and a checkpoint IO by composition. The Trainer
and Fabric users call the same methods, so there is one implementation of each strategy.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Dict, List, Optional

import torch
from torch import nn

from fulmen.accelerators.base import Accelerator
from fulmen.environments.base import ClusterEnvironment
from fulmen.io.checkpoint_io import CheckpointIO, TorchCheckpointIO
from fulmen.precision.base import Precision
from fulmen.utilities.apply import move_data_to_device


class Strategy:
    name: str = ""

    def __init__(
        self,
        accelerator: Optional[Accelerator] = None,
        precision: Optional[Precision] = None,
        checkpoint_io: Optional[CheckpointIO] = None,
        cluster_environment: Optional[ClusterEnvironment] = None,
        parallel_devices: Optional[List[torch.device]] = None,
    ) -> None:
        self.accelerator = accelerator
        self.precision = precision
        self.checkpoint_io = checkpoint_io
        self.cluster_environment = cluster_environment
        self.parallel_devices = parallel_devices
        self.num_nodes = 1

    # ------------------------------------------------------------------ process layout
    @property
    def root_device(self) -> torch.device:
        raise NotImplementedError

    @property
    def world_size(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def launcher(self) -> Optional[Any]:
        """Something with ``launch(function, *args)`` that starts the other processes."""
        return None

    def fill_defaults(self) -> None:
        if self.precision is None:
            self.precision = Precision()
        if self.checkpoint_io is None:
            self.checkpoint_io = TorchCheckpointIO()

    def setup_environment(self) -> None:
        """Runs in every process before any model is set up."""
        self.fill_defaults()
        self.accelerator.setup_device(self.root_device)
        self.precision.setup(self.root_device)

    # ------------------------------------------------------------------ model and data
    def module_init_context(self, empty_init: Optional[bool] = None) -> ContextManager:
        return self.precision.module_init_context()

    def setup_module(self, module: nn.Module) -> nn.Module:
        module = self.precision.convert_module(module)
        return module.to(self.root_device)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def batch_to_device(self, batch: Any) -> Any:
        return self.precision.convert_input(move_data_to_device(batch, self.root_device))

    def process_dataloader(self, dataloader: Any) -> Any:
        return dataloader

    @property
    def distributed_sampler_kwargs(self) -> Optional[Dict[str, int]]:
        """``num_replicas``/``rank`` when the data must be split across processes."""
        return None

    # ------------------------------------------------------------------ optimization
    def forward_context(self) -> ContextManager:
        return self.precision.forward_context()

    def backward(self, tensor: torch.Tensor, module: Optional[nn.Module], *args: Any, **kwargs: Any) -> None:
        self.precision.backward(tensor, module, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = False,
    ) -> torch.Tensor:
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(
            params, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: nn.Module, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_value_(params, clip_val)

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def all_gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order (picklable objects; for small metadata)."""
        return [obj]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self, name: Optional[str] = None) -> None:
        pass

    # ------------------------------------------------------------------ state
    def module_state_dict(self, module: nn.Module) -> Dict[str, Any]:
        return module.state_dict()

    def load_module_state_dict(self, module: nn.Module, state: Dict[str, Any], strict: bool = True) -> None:
        module.load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(path)

    def remove_checkpoint(self, path: Any) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(path)

    def teardown(self) -> None:
        if self.accelerator is not None:
            self.accelerator.teardown()
        if self.checkpoint_io is not None:
            self.checkpoint_io.teardown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accelerator={self.accelerator!r}, precision={self.precision!r})"
