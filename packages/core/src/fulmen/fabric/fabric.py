"""``Fabric``: the layer that touches devices, processes, precision and checkpoint files.

Users who keep their own loop call it directly; the Trainer is written on top of it, so each
strategy and precision has exactly one implementation whichever API drives it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.fabric.connector import STRATEGY_PARTS, resolve_strategy
from fulmen.fabric.deferred_metrics import DEFAULT_FLUSH_EVERY
from fulmen.fabric.respawn import RebuildsInWorkers, launch_rebuilt
from fulmen.fabric.wrappers import DeviceDataLoader, FabricModule, FabricOptimizer
from fulmen.plugins import config as plugin_config
from fulmen.plugins import manager as plugin_manager
from fulmen.strategies.base import Strategy
from fulmen.strategies.capabilities import SupportsNoBackwardSync
from fulmen.strategies.launcher import runs_in_workers
from fulmen.utilities.apply import move_data_to_device
from fulmen.utilities.rank_zero import set_rank
from fulmen.utilities import rng
from fulmen.utilities.seed import seed_everything as _seed_everything

FABRIC_META_KEY = "_fulmen"


def _fulmen_version() -> str:
    from fulmen import __version__

    return __version__


class Fabric(RebuildsInWorkers):
    """Devices, processes, precision and checkpoints for a training loop you write yourself.

    Change a plain PyTorch script in a few places (``fabric.setup``, ``fabric.backward``,
    ``fabric.setup_dataloaders``) and it runs on any accelerator, strategy and precision the
    Trainer runs on, with the same implementation of each. Arguments are the Trainer's
    hardware arguments (see ``fulmen.Trainer``), plus ``callbacks`` (for :meth:`call`) and
    ``loggers`` (for :meth:`log`).
    """

    def __init__(
        self,
        accelerator: Any = "auto",
        strategy: Any = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = None,
        plugins: Optional[Sequence[Any]] = None,
        callbacks: Optional[Union[Any, Sequence[Any]]] = None,
        loggers: Optional[Union[Any, Sequence[Any]]] = None,
        allow_plugins: Optional[Sequence[str]] = None,
        deny_plugins: Optional[Sequence[str]] = None,
    ) -> None:
        # Objects that implement hooks join the manager before the registry is built, so
        # their registration hooks count; strategy parts and names are resolved after.
        hook_objects = [p for p in plugins or () if not isinstance(p, (str, *STRATEGY_PARTS))]
        parts = [p for p in plugins or () if isinstance(p, (str, *STRATEGY_PARTS))]
        hook_objects += requested_plugins(parts, allow_plugins, deny_plugins)
        self._plugin_set = plugin_manager.build(allow=allow_plugins, deny=deny_plugins, explicit=hook_objects)
        self._registry = self._plugin_set.registry
        # A curated distribution's required plugins are checked here, before any training;
        # its defaults fill in accelerator/strategy/precision left unset ("auto"/None).
        accelerator, strategy, precision = plugin_config.apply(self._plugin_set, accelerator, strategy, precision)
        self._strategy, hook_plugins = resolve_strategy(
            self._registry,
            accelerator=accelerator,
            strategy=strategy,
            devices=devices,
            num_nodes=num_nodes,
            precision=precision,
            plugins=parts,
        )
        for plugin in hook_plugins:  # plugin modules asked for by name
            if not self._plugin_set.manager.is_registered(plugin):
                self._plugin_set.manager.register(plugin)
        self._callbacks = _as_list(callbacks)
        self._callback_relay = None  # built at the first call()
        self._deferred = None  # values logged but not read yet; built at the first log()
        #: Rows of device tensors kept before ``log``/``log_dict`` read them to the host.
        self.log_flush_every = DEFAULT_FLUSH_EVERY
        self._loggers = _resolve_loggers(loggers, self._registry)
        self._launched = False
        if not runs_in_workers(self._strategy.launcher):  # workers set themselves up
            self._strategy.setup_environment()
            if self._strategy.world_size > 1:  # whatever the strategy, rank_zero_only follows it
                set_rank(self._strategy.global_rank)

    # ------------------------------------------------------------------ properties
    @property
    def strategy(self) -> Strategy:
        """The strategy object every verb goes through."""
        return self._strategy

    @property
    def accelerator(self):
        """The strategy's accelerator."""
        return self._strategy.accelerator

    @property
    def precision(self):
        """The strategy's precision object."""
        return self._strategy.precision

    @property
    def registry(self):
        """This Fabric's registry of names (strategies, accelerators, loggers, ...)."""
        return self._registry

    @property
    def plugin_manager(self):
        """This Fabric's pluggy manager (built-ins, discovered and explicit plugins)."""
        return self._plugin_set.manager

    @property
    def device(self) -> torch.device:
        """The device this process computes on."""
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        """This process's index in the job."""
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        """This process's index on its node."""
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        """This process's node index."""
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        """How many processes train together."""
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        """True in the one process that should write files and print."""
        return self._strategy.is_global_zero

    @property
    def loggers(self) -> List[Any]:
        """The loggers given to Fabric. Reaching them hands over every value logged so far
        first, so ``fabric.logger.finalize(...)`` or reading a file back sees all rows."""
        self.flush_logs()
        return self._loggers

    @property
    def logger(self) -> Any:
        """The first logger (see :attr:`loggers`), or ``None``."""
        self.flush_logs()
        return self._loggers[0] if self._loggers else None

    # ------------------------------------------------------------------ launching
    def launch(self, function: Optional[Callable[..., Any]] = None, *args: Any, **kwargs: Any) -> Any:
        """Start the other processes (if the strategy needs them) and run ``function(self)``."""
        self._launched = True
        spawns = runs_in_workers(self._strategy.launcher)
        if function is None:
            if spawns:
                raise FulmenConfigError(
                    f"strategy {self._strategy.name!r} starts processes with torch.multiprocessing and needs "
                    "the function to run in them: fabric.launch(train_fn)"
                )
            return None
        if spawns:
            return launch_rebuilt(self, _run_function, function, args, kwargs)
        return function(self, *args, **kwargs)

    # ------------------------------------------------------------------ setup
    def init_module(self, empty_init: Optional[bool] = None) -> ContextManager:
        """Build the model inside this to create it in the right dtype (and shards)."""
        return self._strategy.module_init_context(empty_init)

    def init_tensor(self) -> ContextManager:
        """Tensors created inside this block are made on this process's device and in the
        precision's dtype at once (``"bf16-true"``: bfloat16), with no copy afterwards."""
        return _tensor_init_context(self.device, self._strategy.precision)

    def setup(
        self,
        module: nn.Module,
        *optimizers: torch.optim.Optimizer,
        scheduler: Optional[Any] = None,
        move_to_device: bool = True,
    ):
        """Prepare a model and its optimizers for this strategy and precision, in one call
        (an engine may wrap both as one object, and take the LR ``scheduler`` too). Returns
        the wrapped model, or the model, the optimizers (and the scheduler, when given) as a
        tuple; use what it returns in place of the originals."""
        if scheduler is not None and not optimizers:
            raise FulmenConfigError(
                "fabric.setup(model, scheduler=...) needs the scheduler's optimizer too: "
                "fabric.setup(model, optimizer, scheduler=...)"
            )
        schedulers = [scheduler] if scheduler is not None else []
        if not optimizers or not move_to_device:
            fabric_module = self.setup_module(module, move_to_device=move_to_device)
            fabric_optimizers = [self.setup_optimizer(opt) for opt in optimizers]
        else:
            fabric_module, fabric_optimizers, schedulers = self.setup_module_and_optimizers(
                module, lambda: (list(optimizers), schedulers)
            )
        if not fabric_optimizers:
            return fabric_module
        return (fabric_module, *fabric_optimizers, *schedulers[:1])

    def setup_module_and_optimizers(self, module: nn.Module, configure_optimizers: Callable[[], Any]):
        """``Strategy.setup_module_and_optimizers`` with fulmen's wrappers around the result:
        ``configure_optimizers()`` returns ``(optimizers, schedulers)`` and is called when
        the strategy needs them. Returns ``(FabricModule, [FabricOptimizer], schedulers)``."""
        if isinstance(module, FabricModule):
            raise FulmenConfigError("this module was already set up; call setup() once per module")
        forward_module, optimizers, schedulers = self._strategy.setup_module_and_optimizers(module, configure_optimizers)
        fabric_module = FabricModule(forward_module, self._strategy, original_module=module)
        return fabric_module, [FabricOptimizer(opt, self._strategy) for opt in optimizers], schedulers

    def setup_module(self, module: nn.Module, move_to_device: bool = True) -> FabricModule:
        """Prepare one model (precision, device, wrapping); call its returned wrapper in place of it."""
        if isinstance(module, FabricModule):
            raise FulmenConfigError("this module was already set up; call setup() once per module")
        forward_module = self._strategy.setup_module(module) if move_to_device else module
        return FabricModule(forward_module, self._strategy, original_module=module)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> FabricOptimizer:
        """Prepare one optimizer built on an already set up model's parameters."""
        if isinstance(optimizer, FabricOptimizer):
            raise FulmenConfigError("this optimizer was already set up; call setup() once per optimizer")
        return FabricOptimizer(self._strategy.setup_optimizer(optimizer), self._strategy)

    def setup_optimizers(self, *optimizers: torch.optim.Optimizer):
        """Prepare several optimizers; returns one or a tuple."""
        wrapped = [self.setup_optimizer(opt) for opt in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def setup_dataloaders(self, *dataloaders: Any, use_distributed_sampler: bool = True, move_to_device: bool = True):
        """Give each process its share of the data, move batches to the device, and make the loaders' position checkpointable."""
        wrapped = [self._setup_dataloader(dl, use_distributed_sampler, move_to_device) for dl in dataloaders]
        return wrapped[0] if len(wrapped) == 1 else wrapped

    def _setup_dataloader(self, dataloader: Any, use_distributed_sampler: bool, move_to_device: bool):
        from fulmen.dataloading import make_resumable

        if use_distributed_sampler:
            dataloader = self._strategy.process_dataloader(dataloader)
        # A shuffled map-style loader gets a sampler whose order is fixed by (seed, epoch),
        # so its position can be checkpointed and resumed exactly.
        return DeviceDataLoader(make_resumable(dataloader), self._strategy, move_to_device)

    def to_device(self, obj: Any) -> Any:
        """Move a module or a (nested) batch to this process's device."""
        if isinstance(obj, nn.Module):
            return obj.to(self.device)
        return move_data_to_device(obj, self.device, self.accelerator.non_blocking_copies)

    # ------------------------------------------------------------------ training verbs
    def backward(self, tensor: torch.Tensor, *args: Any, model: Optional[nn.Module] = None, **kwargs: Any) -> None:
        """Use instead of ``loss.backward()``: precision (loss scaling) and strategy (an engine's backward) take part."""
        module = model.module if isinstance(model, FabricModule) else model
        self._strategy.backward(tensor, module, *args, **kwargs)

    def clip_gradients(
        self,
        module: nn.Module,
        optimizer: Any,
        clip_val: Optional[float] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Optional[torch.Tensor]:
        """Clip gradients by value (``clip_val``) or by total norm (``max_norm``, returned)
        through the strategy, which knows sharded gradients and loss scales."""
        if (clip_val is None) == (max_norm is None):
            raise FulmenConfigError("clip_gradients needs exactly one of clip_val= (by value) or max_norm= (by norm)")
        raw_optimizer = optimizer.optimizer if isinstance(optimizer, FabricOptimizer) else optimizer
        raw_module = module.module if isinstance(module, FabricModule) else module
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(raw_module, raw_optimizer, max_norm, norm_type, error_if_nonfinite)
        self._strategy.clip_gradients_value(raw_module, raw_optimizer, clip_val)
        return None

    def autocast(self) -> ContextManager:
        """The precision's forward context, for code that runs outside the set-up model's forward."""
        return self._strategy.precision.forward_context()

    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> ContextManager:
        """Skip the gradient all-reduce inside this block (for accumulation micro-batches)."""
        if not enabled or not isinstance(self._strategy, SupportsNoBackwardSync):
            return contextlib.nullcontext()
        raw = module._forward_module if isinstance(module, FabricModule) else module
        return self._strategy.no_backward_sync(raw, enabled)

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, data: Any, reduce_op: str = "mean") -> Any:
        """Combine tensors (nested too) across processes: ``mean``, ``sum``, ``max``, ``min``."""
        from fulmen.utilities.apply import apply_to_tensors

        return apply_to_tensors(_to_tensor(data, self.device), lambda t: self._strategy.all_reduce(t, reduce_op))

    def all_gather(self, data: Any, sync_grads: bool = False) -> Any:
        """Every process's tensors, stacked along a new first dimension."""
        from fulmen.utilities.apply import apply_to_tensors

        return apply_to_tensors(_to_tensor(data, self.device), lambda t: self._strategy.all_gather(t, sync_grads))

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable object on every process."""
        return self._strategy.broadcast(obj, src)

    def barrier(self, name: Optional[str] = None) -> None:
        """Wait until every process arrives here."""
        self._strategy.barrier(name)

    def rank_zero_first(self, local: bool = False) -> ContextManager:
        """Run the block on rank 0 first and on the other ranks once it is done (every rank
        enters it): for downloads and caches the others then find on disk. ``local=True``:
        local rank 0 of each node goes first, for nodes that share no file system."""
        from fulmen.fabric.rank_order import first_then_others

        rank = self.local_rank if local else self.global_rank
        return first_then_others(self._strategy, goes_first=rank == 0)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` in the first process of each node only (local rank 0, as Lightning's),
        so a multi-process job prints each line once per machine."""
        if self.local_rank == 0:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    def save(
        self,
        path: Union[str, Path],
        state: Dict[str, Any],
        filter: Optional[Dict[str, Callable[[str, Any], bool]]] = None,
    ) -> None:
        """Write ``state`` (modules, optimizers and anything with ``state_dict``) atomically.
        ``filter`` maps state keys to ``fn(name, value) -> bool``: only the entries of that
        key's state dict it accepts are saved (say, adapter weights without the frozen base)."""
        from fulmen.fabric.state import apply_filter, check_filter, collect_state

        if filter is not None:
            check_filter(filter, state)
        checkpoint = collect_state(state, self._strategy)
        if filter is not None:
            apply_filter(checkpoint, filter)
        if FABRIC_META_KEY in checkpoint:
            raise FulmenConfigError(f"{FABRIC_META_KEY!r} is reserved by fulmen; rename that entry of the state")
        # Random streams travel with the state so that a resumed loop draws the same numbers;
        # every rank's, since each draws its own (dropout masks differ per rank).
        checkpoint[FABRIC_META_KEY] = {"rng": rng.capture_per_rank(self._strategy), "fulmen_version": _fulmen_version()}
        self.flush_logs()  # what was logged before this checkpoint is with the loggers
        self._strategy.save_checkpoint(checkpoint, path)
        self.barrier("fabric.save")

    def load(self, path: Union[str, Path], state: Optional[Dict[str, Any]] = None, strict: bool = True) -> Dict[str, Any]:
        """Restore into ``state``'s objects in place; returns the entries not consumed."""
        from fulmen.fabric.state import restore_state

        checkpoint = self._strategy.load_checkpoint(path)
        meta = checkpoint.pop(FABRIC_META_KEY, None)
        if state is None:
            return checkpoint
        remainder = restore_state(checkpoint, state, self._strategy, strict=strict)
        if meta is not None and "rng" in meta:
            own = rng.for_rank(meta["rng"], self.global_rank)
            if own is not None:
                rng.restore(own, self.accelerator)
        return remainder

    def load_raw(self, path: Union[str, Path], obj: Union[nn.Module, torch.optim.Optimizer], strict: bool = True) -> None:
        """Load a plain state dict file (``torch.save(model.state_dict(), path)``, written
        without Fabric) into a module or an optimizer, through the strategy (which may hold
        the module in shards). ``strict`` applies to modules only, as in ``load_state_dict``."""
        from fulmen.fabric.state import read_raw_state, unwrap

        target = unwrap(obj)
        if not isinstance(target, (nn.Module, torch.optim.Optimizer)):
            raise FulmenConfigError(
                f"fabric.load_raw(path, obj) loads into a module or an optimizer, not a {type(obj).__name__}; "
                "for a checkpoint written by fabric.save use fabric.load(path, state)"
            )
        saved = read_raw_state(path)
        if FABRIC_META_KEY in saved:
            raise FulmenCheckpointError(
                f"{str(path)!r} was written by fabric.save and holds {sorted(k for k in saved if k != FABRIC_META_KEY)}, "
                "not one state dict; load it with fabric.load(path, {'model': model, ...})"
            )
        if isinstance(target, nn.Module):
            self._strategy.load_module_state_dict(target, saved, strict=strict)
        else:
            self._strategy.load_optimizer_state_dict(target, saved)

    # ------------------------------------------------------------------ logging, callbacks
    def log(self, name: str, value: Any, step: Optional[int] = None) -> None:
        """Send one scalar to every logger; see :meth:`log_dict`."""
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: Dict[str, Any], step: Optional[int] = None) -> None:
        """Send scalars to every logger (rank zero only). Tensors are read to the host in
        batches (every ``log_flush_every`` rows, at ``save``, when ``fabric.logger`` is
        reached, at exit), not with a host-device sync per call."""
        if not self._loggers or not self.is_global_zero:
            return
        if self._deferred is None:
            from fulmen.fabric.deferred_metrics import DeferredMetrics

            self._deferred = DeferredMetrics(self._loggers, self.log_flush_every)
        self._deferred.add(metrics, step)

    def flush_logs(self) -> None:
        """Hand every value logged so far to the loggers now (before reading them back)."""
        if self._deferred is not None:
            self._deferred.flush()

    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook_name`` on every callback given to Fabric that defines it, in the
        order of ``callbacks=``. Each callback receives the keyword arguments its method
        names, any subset of those passed (pluggy's rule, as for the Trainer's hooks)."""
        if self._callback_relay is None:
            from fulmen.fabric.callback_relay import CallbackRelay

            self._callback_relay = CallbackRelay(self._callbacks)
        self._callback_relay.call(hook_name, args, kwargs)

    def seed_everything(self, seed: Optional[int] = None, workers: bool = False) -> int:
        """Seed Python, NumPy and torch (and dataloader workers with ``workers=True``); returns the seed."""
        return _seed_everything(seed, workers=workers)


@contextlib.contextmanager
def _tensor_init_context(device: torch.device, precision: Any) -> Iterator[None]:
    with torch.device(device), precision.module_init_context():
        yield


def _run_function(fabric: "Fabric", function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """In a spawned/forked rank: the user's function, given this rank's own Fabric."""
    return function(fabric, *args, **kwargs)


def requested_plugins(names: Sequence[Any], allow: Any, deny: Any) -> List[Any]:
    """Entry-point plugins named in ``plugins=``: loaded even when autoload is off or they
    are outside the allow list (the user asked for them), but never past the deny list."""
    from fulmen.errors import FulmenPluginError
    from fulmen.plugins import discovery, policy

    found = []
    records = discovery.records()
    _, deny_set = policy.effective_lists(allow, deny)
    for name in names:
        if not isinstance(name, str) or name not in records:
            continue
        if policy.is_listed(records[name], deny_set):
            raise FulmenPluginError(
                f"plugins=[{name!r}] asks for a plugin that is denied (FULMEN_PLUGINS_DENY or "
                "deny_plugins=); remove it from the deny list or from plugins="
            )
        found.append(discovery.require(name))
    return found


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _resolve_loggers(loggers: Any, registry) -> List[Any]:
    out = []
    for logger in _as_list(loggers):
        out.append(registry.create("logger", logger) if isinstance(logger, str) else logger)
    return out


def _to_tensor(data: Any, device: torch.device) -> Any:
    if isinstance(data, (int, float)):
        return torch.tensor(data, device=device)
    return data
