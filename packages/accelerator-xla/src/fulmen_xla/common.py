"""What every XLA strategy does the same way: the device, the loader, the sync after each
optimizer step, the compile watch, and checkpoints moved to the host before writing."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional

import torch

from fulmen.strategies.parameter_moves import repoint_optimizer, replaced_parameters
from fulmen.utilities.apply import apply_to_tensors

from fulmen_xla import loader, runtime
from fulmen_xla.compile_watch import CompileWatch


def to_host(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """Every XLA tensor of ``checkpoint`` copied to the CPU (after one sync, so the values
    are the step's, not a pending graph's); a CPU checkpoint loads anywhere."""
    runtime.sync()

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.cpu() if tensor.device.type == "xla" else tensor

    return apply_to_tensors(checkpoint, move)


class XLALoopMixin:
    """Mixed into each XLA strategy (before its fulmen base class)."""

    input_sharding: Optional[Any] = None
    _evaluating = False

    def _xla_init(self) -> None:
        self.compile_watch = CompileWatch()

    @property
    def root_device(self) -> torch.device:
        return runtime.current_device()

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Place the module (the strategy's ``_place_module``), remembering the parameter
        objects ``module.to("xla")`` replaced, so that an optimizer built on the CPU module
        and set up afterwards (``fabric.setup_optimizers``) steps the new ones."""
        before = list(module.parameters())
        place = getattr(self, "_place_module", None)
        placed = place(module) if place is not None else super().setup_module(module)
        self._replaced_parameters = replaced_parameters(before, module)
        return placed

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        repoint_optimizer(optimizer, getattr(self, "_replaced_parameters", {}))
        return optimizer

    def device_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Copy ahead on torch-xla's background loader; the precision still casts each batch."""
        moved = loader.device_batches(batches, self.root_device, self.precision.convert_input, self.input_sharding)
        if self._evaluating:
            return moved
        return self._reseeded(moved)

    def _reseeded(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Each training batch is handed on with its own device seed (see the accelerator)."""
        reseed = getattr(self.accelerator, "reseed_for_training_batch", None)
        for batch in batches:
            if reseed is not None:
                reseed()
            yield batch

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Optional[Callable[[], Any]] = None,
                       boundary: bool = True) -> Any:
        """Step at a boundary, then ``torch_xla.sync()``: the step's graph ends here and runs
        while the host prepares the next one."""
        if not boundary:
            return None
        self.reduce_gradients(optimizer)
        result = self.precision.optimizer_step(optimizer, closure)
        runtime.sync()
        self.compile_watch.after_step()
        return result

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Combine gradients across processes before the step (nothing for one process)."""

    def evaluation_context(self, inference_mode: bool = True) -> ContextManager:
        # XLA tensors made under inference_mode cannot be used by a later training graph.
        return _counted_apart(self, torch.no_grad())

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        host = to_host(checkpoint)  # every rank: the copies are collectives' siblings in SPMD
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(host, path, storage_options=storage_options)
        self.barrier("save_checkpoint")


    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        """A checkpoint file, or an ``xla_spmd`` directory (read whole, on the host): a model
        trained sharded resumes on one device or one device per process."""
        from fulmen_xla import spmd_checkpoint

        if spmd_checkpoint.is_spmd_checkpoint(path):
            return spmd_checkpoint.load(path, self.checkpoint_io)
        return self.checkpoint_io.load_checkpoint(path)


@contextlib.contextmanager
def _counted_apart(strategy: XLALoopMixin, inner: ContextManager):
    """Evaluation compiles its own graphs (not recompilations of the step), and its batches
    take no training seed."""
    strategy._evaluating = True
    try:
        with inner:
            yield
    finally:
        strategy._evaluating = False
    runtime.sync()
    watch = strategy.compile_watch
    if watch.baseline is not None:
        from fulmen_xla.compile_watch import compile_count

        watch.baseline = compile_count()
