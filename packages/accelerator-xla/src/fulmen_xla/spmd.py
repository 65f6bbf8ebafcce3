"""``strategy="xla_spmd"``: one process drives every device of the host through a mesh.

This is how large models train on TPUs now: the program is written for one device and
XLA's SPMD partitioner splits it, guided by sharding annotations. The parameters are
sharded FSDP-style over the mesh's ``fsdp`` axis (torch-xla's FSDPv2,
``SpmdFullyShardedDataParallel``), each batch is split along its first dimension over the
same axis as it is copied in, and the optimizer's state follows its parameter's sharding.
Checkpoints are DCP directories written shard by shard (:mod:`fulmen_xla.spmd_checkpoint`).

SPMD must be switched on before any XLA tensor exists, and it is for the whole process: the
strategy does it in ``setup_environment``, and refuses when the runtime already started
without it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from fulmen.errors import FulmenConfigError
from fulmen.strategies.base import Strategy

from fulmen_xla import runtime, spmd_checkpoint
from fulmen_xla.common import XLALoopMixin


def _enable_spmd() -> None:
    import torch_xla.runtime as xr

    if xr.is_spmd():
        return
    if runtime.is_started():
        raise FulmenConfigError(
            "strategy='xla_spmd' must switch torch-xla to SPMD before any XLA tensor exists, but this process "
            "has already used an XLA device; create the Trainer/Fabric first, or call "
            "torch_xla.runtime.use_spmd() at the top of your script"
        )
    xr.use_spmd()


class XLASPMDStrategy(XLALoopMixin, Strategy):
    """SPMD over the host's devices. ``mesh_shape`` (default: all devices on one ``fsdp``
    axis) and ``axis_names`` describe the mesh; a second axis (for example ``("fsdp",
    "model")``) is there for the model's own ``mark_sharding`` calls. ``shard_parameters=False``
    keeps every parameter whole on every device (pure data parallel)."""

    name = "xla_spmd"
    supports_inference_mode = False

    def __init__(self, mesh_shape: Optional[Sequence[int]] = None, axis_names: Sequence[str] = ("fsdp",),
                 shard_parameters: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "fsdp" not in axis_names:
            raise FulmenConfigError(f"XLASPMDStrategy(axis_names={tuple(axis_names)!r}) needs an 'fsdp' axis")
        self.mesh_shape = tuple(mesh_shape) if mesh_shape is not None else None
        self.axis_names = tuple(axis_names)
        self.shard_parameters = shard_parameters
        self.mesh = None
        self._module: Optional[nn.Module] = None
        self._xla_init()

    # ------------------------------------------------------------------ layout
    @property
    def num_devices(self) -> int:
        return len(self.parallel_devices) if self.parallel_devices else 1

    def setup_environment(self) -> None:
        self.fill_defaults()
        _enable_spmd()
        import numpy as np
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        available = xr.global_runtime_device_count()
        if self.num_devices != available:
            raise FulmenConfigError(
                f"strategy='xla_spmd' drives every device of the runtime ({available}), but devices="
                f"{self.num_devices}; use devices={available} or 'auto' (limit the devices with "
                "CPU_NUM_DEVICES / TPU_VISIBLE_CHIPS)"
            )
        shape = self.mesh_shape or (available,) + (1,) * (len(self.axis_names) - 1)
        if len(shape) != len(self.axis_names) or int(np.prod(shape)) != available:
            raise FulmenConfigError(
                f"mesh_shape={shape} with axis_names={self.axis_names}: one size per axis, and their product "
                f"must be the {available} devices"
            )
        self.mesh = xs.Mesh(np.arange(available), shape, self.axis_names)
        xs.set_global_mesh(self.mesh)
        self.input_sharding = _BatchSharding(self.mesh)
        self.accelerator.setup_device(self.root_device)
        self.precision.setup(self.root_device)

    # ------------------------------------------------------------------ model
    def _place_module(self, module: nn.Module) -> nn.Module:
        """Cast for precision, shard the parameters over ``fsdp`` (FSDPv2)."""
        module = self.precision.convert_module(module).to(self.root_device)
        self._module = module
        if not self.shard_parameters:
            return module
        from torch_xla.experimental.spmd_fully_sharded_data_parallel import SpmdFullyShardedDataParallel

        # The wrapped forward is the Trainer's step dispatcher, whose output is a loss or a
        # dict, not activations: the batch's sharding already fixes the layout.
        return SpmdFullyShardedDataParallel(module, mesh=self.mesh, shard_output=_leave_output)

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
        """Load, then give each state tensor its parameter's sharding (a loaded state arrives whole)."""
        optimizer.load_state_dict(state)
        _shard_like_parameters(optimizer, self.mesh)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        spmd_checkpoint.save(checkpoint, path, self.checkpoint_io)

    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        """A directory written by this strategy, loaded shard by shard into the live
        parameters; or a single-file checkpoint (from another strategy, the CPU)."""
        if not spmd_checkpoint.is_spmd_checkpoint(path):
            return super().load_checkpoint(path)
        live = {}
        if self._module is not None:
            live = spmd_checkpoint.split({"state_dict": self._module.state_dict()})[1]
        return spmd_checkpoint.load(path, self.checkpoint_io, live)

    def remove_checkpoint(self, path: Any) -> None:
        from fulmen.io.atomic import remove_path

        remove_path(path)


class _BatchSharding:
    """ParallelLoader's ``input_sharding`` for batches of any nesting and rank: each tensor
    is split along its first dimension over ``fsdp`` as it is copied in (one
    ``ShardingSpec`` per tensor rank); scalars, and tensors whose first dimension the axis
    does not divide, are copied whole to every device."""

    minibatch = False

    def __init__(self, mesh, axis: str = "fsdp") -> None:
        self.mesh = mesh
        self.axis = axis
        self.axis_size = dict(zip(mesh.axis_names, mesh.mesh_shape))[axis]
        self._specs: Dict[int, Any] = {}

    def xla_spec(self, tensor: torch.Tensor):
        if tensor.dim() == 0 or tensor.shape[0] % self.axis_size:
            return None
        spec = self._specs.get(tensor.dim())
        if spec is None:
            import torch_xla.distributed.spmd as xs

            spec = self._specs[tensor.dim()] = xs.ShardingSpec(self.mesh, (self.axis,) + (None,) * (tensor.dim() - 1))
        return spec.xla_spec(tensor)


def _leave_output(output: Any, mesh: Any) -> None:
    return None


def _shard_like_parameters(optimizer: torch.optim.Optimizer, mesh) -> None:
    import torch_xla
    import torch_xla.distributed.spmd as xs
    from torch_xla.experimental.spmd_fully_sharded_data_parallel import _prepare_spmd_partition_spec

    for group in optimizer.param_groups:
        for param in group["params"]:
            if not torch_xla._XLAC._get_xla_sharding_spec(param):
                continue
            for value in optimizer.state.get(param, {}).values():
                if (isinstance(value, torch.Tensor) and value.device.type == "xla" and value.shape == param.shape
                        and not torch_xla._XLAC._get_xla_sharding_spec(value)):
                    xs.mark_sharding(value, mesh, _prepare_spmd_partition_spec(value, shard_maximal=True))
