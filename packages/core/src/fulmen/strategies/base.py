"""The strategy contract: how a module, its optimizers and its data meet the devices.

A strategy owns an accelerator, a precision and a checkpoint IO by composition. The Trainer
and Fabric users call the same methods, so there is one implementation of each strategy.

Every step the Trainer takes goes through a public method here, so a backend whose engine
owns backward, the optimizer step, clipping, accumulation and its own checkpoint directory
(DeepSpeed-like) overrides methods instead of patching the loop. The order of the calls
(the lifecycle) is documented in ``docs/plugins.md``, "The strategy lifecycle"::

    __init__ -> (registry fills accelerator, precision, checkpoint_io, cluster_environment)
    launcher.launch(...)                      # only if ``launcher`` is not None
    setup_environment()                       # every process, before any model
    module_init_context(empty_init)           # around configure_model()
    setup_module_and_optimizers(module, configure_optimizers)   # fit; setup_module otherwise
    process_dataloader(loader) per loader; device_batches(pass) per pass over it,
                                            which calls batch_to_device(batch) per batch
    per micro-batch:  [no_backward_sync(module) while accumulating, if supported]
                      forward_context(); backward(loss, module)
                      optimizer_step(optimizer, None, boundary=False)   # accumulating
    per boundary:     clip_gradients_norm/value(...); optimizer_step(..., boundary=True)
                      zero_grad(optimizer)
    evaluation_context(inference_mode)        # around validate/test/predict loops
    save_checkpoint / load_checkpoint / remove_checkpoint / find_checkpoints
    teardown()                                # after each fit/validate/test/predict
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from fulmen.accelerators.base import Accelerator
from fulmen.environments.base import ClusterEnvironment
from fulmen.io.checkpoint_io import CheckpointIO, TorchCheckpointIO
from fulmen.precision.base import Precision
from fulmen.strategies.parameter_moves import repoint_optimizer, replaced_parameters
from fulmen.utilities.apply import move_data_to_device


class Strategy:
    """Base class of every strategy; subclass it (or one of its subclasses, such as
    ``fulmen.strategies.DDPStrategy``) and register the class with ``register_strategies``.

    The defaults run one process on one device with no help from any engine; override the
    methods your backend does differently.
    """

    name: str = ""
    #: Whether evaluation may run under ``torch.inference_mode``. Backends whose collectives
    #: or compiled graphs refuse inference tensors set this to False (``no_grad`` is used).
    supports_inference_mode: bool = True

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
        """The device this process computes on (the batch goes there)."""
        raise NotImplementedError

    @property
    def world_size(self) -> int:
        """How many processes train together (1 unless the strategy is distributed)."""
        return 1

    @property
    def global_rank(self) -> int:
        """This process's index among all processes of the job."""
        return 0

    @property
    def local_rank(self) -> int:
        """This process's index on its node (picks its device)."""
        return 0

    @property
    def node_rank(self) -> int:
        """The index of this process's node."""
        return 0

    @property
    def is_global_zero(self) -> bool:
        """True in the one process that writes files and talks to loggers."""
        return self.global_rank == 0

    @property
    def launcher(self) -> Optional[Any]:
        """A :class:`fulmen.strategies.launcher.Launcher` that still has to start processes,
        or ``None`` when every process of the job exists already (this one included)."""
        return None

    def fill_defaults(self) -> None:
        """Give a strategy built by hand the parts the registry would have given it."""
        if self.precision is None:
            self.precision = Precision()
        if self.checkpoint_io is None:
            self.checkpoint_io = TorchCheckpointIO()

    def setup_environment(self) -> None:
        """Runs in every process before any model is set up (and again after a teardown)."""
        self.fill_defaults()
        self.accelerator.setup_device(self.root_device)
        self.precision.setup(self.root_device)

    # ------------------------------------------------------------------ model and data
    def module_init_context(self, empty_init: Optional[bool] = None) -> ContextManager:
        """Entered around model creation (``configure_model``, ``Fabric.init_module``):
        the precision's dtype, and for sharding strategies the meta device."""
        return self.precision.module_init_context()

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Convert, move and wrap one module; returns what the forward pass should call."""
        module = self.precision.convert_module(module)
        return module.to(self.root_device)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Adapt one optimizer built on the module's (already set up) parameters."""
        return optimizer

    def setup_module_and_optimizers(
        self, module: nn.Module, configure_optimizers: Callable[[], Tuple[List[Any], List[Any]]]
    ) -> Tuple[nn.Module, List[Any], List[Any]]:
        """Set up a module together with its optimizers and LR schedulers, in one call.

        ``configure_optimizers()`` returns ``(optimizers, schedulers)`` built on the
        module's parameters; the strategy decides when to call it. The default wraps the
        module first and calls it after (a sharding strategy's optimizers must see the
        sharded parameters), then adapts each optimizer. An engine that creates the wrapped
        model and its optimizer as one object (DeepSpeed's ``initialize``) calls it first
        on the plain module. Returns ``(module to call forward on, optimizers, schedulers)``;
        the optimizers returned are what the loop steps.
        """
        before = list(module.parameters())
        wrapped = self.setup_module(module)
        replaced = replaced_parameters(before, module)
        optimizers, schedulers = configure_optimizers()
        for optimizer in optimizers:  # built before the move (Fabric), on parameters it replaced
            repoint_optimizer(optimizer, replaced)
        return wrapped, [self.setup_optimizer(opt) for opt in optimizers], list(schedulers)

    def batch_to_device(self, batch: Any) -> Any:
        """Move one batch to this process's device, converted to the precision's dtype."""
        moved = move_data_to_device(batch, self.root_device, self.accelerator.non_blocking_copies)
        return self.precision.convert_input(moved)

    def device_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The batches of one pass over a loader, on the device, in order.

        The default moves each batch as it is asked for (:meth:`batch_to_device`). A
        backend with its own transfer pipeline (XLA's background loader) overrides this to
        copy ahead while the step runs; the loader counts a batch as consumed only when it
        is handed to the loop, so reading ahead never shifts a checkpoint's position."""
        to_device = self.batch_to_device
        for batch in batches:
            yield to_device(batch)

    def process_dataloader(self, dataloader: Any) -> Any:
        """Wrap a dataloader for this strategy: split it across processes, or hand it to
        the backend's own device loader. Called once per loader, before iteration."""
        return dataloader

    @property
    def distributed_sampler_kwargs(self) -> Optional[Dict[str, int]]:
        """``num_replicas``/``rank`` when the data must be split across processes."""
        return None

    # ------------------------------------------------------------------ optimization
    def forward_context(self) -> ContextManager:
        """Entered around each forward pass (autocast for mixed precision)."""
        return self.precision.forward_context()

    def backward(self, tensor: torch.Tensor, module: Optional[nn.Module], *args: Any, **kwargs: Any) -> None:
        """Backpropagate ``tensor`` (the loss, already divided for accumulation)."""
        self.precision.backward(tensor, module, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Optional[Callable[[], Any]] = None,
        boundary: bool = True,
    ) -> Any:
        """Step ``optimizer``. The Trainer calls this after every micro-batch's backward,
        with ``boundary=False`` while gradients accumulate and ``True`` at the step that
        completes an accumulation window; only then does the default step (an engine that
        counts micro-batches itself steps on every call). Fabric's ``optimizer.step()``
        always means a boundary. An override written without the ``boundary`` parameter
        (the 0.1.0 signature) is only called at boundaries, as before."""
        if not boundary:
            return None
        return self.precision.optimizer_step(optimizer, closure)

    def zero_grad(self, optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        """Clear the gradients after a step (an engine that clears its own makes this a no-op)."""
        optimizer.zero_grad(set_to_none=set_to_none)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before anyone reads them (the
        ``on_before_optimizer_step`` hook, clipping); idempotent within one step."""
        self.precision.unscale_gradients(optimizer)

    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = False,
    ) -> torch.Tensor:
        """Scale gradients so their total norm is at most ``max_norm``; returns the norm."""
        self.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(
            params, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: nn.Module, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        """Clamp every gradient element into ``[-clip_val, clip_val]``."""
        self.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_value_(params, clip_val)

    def evaluation_context(self, inference_mode: bool = True) -> ContextManager:
        """Entered around validation, test, predict and the sanity check: no autograd.

        ``inference_mode`` is the user's wish (``Trainer(inference_mode=...)``); it is
        honoured where :attr:`supports_inference_mode` says the backend accepts it.
        """
        if inference_mode and self.supports_inference_mode:
            return torch.inference_mode()
        return torch.no_grad()

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        """Combine ``tensor`` across processes: ``"mean"``, ``"sum"``, ``"max"``, ``"min"``."""
        return tensor

    def all_gather(self, tensor: torch.Tensor, sync_grads: bool = False) -> torch.Tensor:
        """Stack every process's ``tensor`` along a new first dimension."""
        return tensor.unsqueeze(0)

    def all_gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order (picklable objects; for small metadata)."""
        return [obj]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every process (picklable objects)."""
        return obj

    def barrier(self, name: Optional[str] = None) -> None:
        """Wait until every process arrives here."""

    # ------------------------------------------------------------------ state
    def module_state_dict(self, module: nn.Module) -> Dict[str, Any]:
        """The module's state as it goes into a checkpoint (a shard, for sharding strategies)."""
        return module.state_dict()

    def load_module_state_dict(self, module: nn.Module, state: Dict[str, Any], strict: bool = True) -> None:
        """Put what :meth:`module_state_dict` returned back into ``module``."""
        module.load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
        """The optimizer's state as it goes into a checkpoint."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
        """Put what :meth:`optimizer_state_dict` returned back into ``optimizer``."""
        optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Write ``checkpoint`` at ``path``: a file by default, or a directory that a backend
        with its own format fills (every rank calls this; the default writes on rank 0)."""
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        """Read what :meth:`save_checkpoint` wrote (every rank calls this)."""
        return self.checkpoint_io.load_checkpoint(path)

    def remove_checkpoint(self, path: Any) -> None:
        """Delete a checkpoint that ``ModelCheckpoint`` no longer keeps (file or directory)."""
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(path)

    def find_checkpoints(self, directory: Any) -> List[Path]:
        """The checkpoints under ``directory`` (for ``ckpt_path="last"``): every ``*.ckpt``
        file or directory, but nothing inside a checkpoint directory, whose own files are
        parts of it. A backend with another naming scheme overrides this."""
        root = Path(directory)
        if not root.is_dir():
            return []
        found = sorted(root.rglob("*.ckpt"))
        directories = [p for p in found if p.is_dir()]
        return [p for p in found if not any(d in p.parents for d in directories)]

    def teardown(self) -> None:
        """Release what one stage took (device caches, background writers, a launcher's
        bookkeeping). The Trainer calls it after every fit/validate/test/predict, also when
        the stage failed, and calls :meth:`setup_environment` again before the next one, so
        it must be safe to set up again. A process group belongs to the job, not to a stage:
        work after ``fit`` (``save_checkpoint``, the user's collectives) still needs it."""
        if self.accelerator is not None:
            self.accelerator.teardown()
        if self.checkpoint_io is not None:
            self.checkpoint_io.teardown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accelerator={self.accelerator!r}, precision={self.precision!r})"


def steps_every_micro_batch(strategy: Strategy) -> bool:
    """Whether ``strategy.optimizer_step`` takes ``boundary`` (and so wants to hear about
    every micro-batch). Asked once per fit, never per step."""
    try:
        parameters = inspect.signature(strategy.optimizer_step).parameters
    except (TypeError, ValueError):
        return False
    # Named, not **kwargs: an override passing **kwargs on without looking would step on
    # every micro-batch.
    return "boundary" in parameters
