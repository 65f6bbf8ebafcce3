"""``FSDPStrategy``: Fully Sharded Data Parallel on PyTorch's FSDP2 (``fully_shard``).

Each process holds a shard of every parameter, gradient and optimizer state (dimension 0
split across the processes of the device mesh). A shard unit (a module chosen by
``auto_wrap_policy``, and always the root) gathers its full parameters just before its
forward and backward and frees them after, so peak memory is the shards plus one unit.

Everything about processes (launching, torchrun/SLURM environments, the process group,
collectives, failure guards) is inherited from ``DDPStrategy``; this class changes what
happens to the module, the gradients and the checkpoints.

Order of the work in ``setup_module`` (the order torchtitan uses):
    precision conversion (``*-true`` modes) → activation checkpointing on the chosen classes
    → ``torch.compile`` of each shard unit (when asked) → ``fully_shard`` of each unit,
    innermost first → ``fully_shard`` of the root → materialise meta-device parameters.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn

from fulmen.errors import FulmenConfigError, FulmenWarning
from fulmen.strategies.ddp import DDPStrategy
from fulmen_fsdp import checkpoint as sharded
from fulmen_fsdp.async_io import FinishingCheckpointIO
from fulmen_fsdp.gradients import total_gradient_norm, without_gradient_sync
from fulmen_fsdp.wrapping import (
    Policy,
    apply_activation_checkpointing,
    has_meta_tensors,
    materialize_meta_tensors,
    policy_predicate,
    resolve_policy,
    select_modules,
)

try:  # FSDP2's public home since torch 2.6
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor
except ImportError as _exc:  # pragma: no cover - depends on the installed torch
    raise ImportError(
        f"fulmen-strategy-fsdp needs torch>=2.6 (FSDP2's torch.distributed.fsdp.fully_shard); found torch "
        f"{torch.__version__}: pip install -U 'torch>=2.6'"
    ) from _exc

STATE_DICT_TYPES = ("sharded", "full")
SHARDING_STRATEGIES = ("full", "hybrid")
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
_GPU_PRECISIONS = ("16-mixed", "16-true")


def mixed_precision_policy(precision: Any) -> MixedPrecisionPolicy:
    """FSDP2's policy for a fulmen precision (a ``Precision`` or its name).

    ``bf16-mixed``/``16-mixed``: parameters are gathered and computed in the low dtype,
    gradients are reduced in float32 and the sharded master weights stay float32.
    ``*-true``: the module itself is converted to that dtype, so FSDP has nothing to cast.
    """
    name = precision if isinstance(precision, str) else getattr(precision, "name", "32-true")
    if name == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if name == "16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


class FSDPStrategy(DDPStrategy):
    """Fully Sharded Data Parallel (FSDP2) training, for the Trainer and for Fabric.

    Args:
        auto_wrap_policy: which submodules become their own shard unit (all-gathered for
            their forward/backward only): module classes, class names (checked against the
            model), or a callable ``module -> bool``. ``"auto"`` (default): the classes the
            model lists in ``_no_split_modules`` (a ``transformers`` model's blocks), else
            only the root. ``None``: only the root (the whole model is one unit).
        activation_checkpointing_policy: modules whose activations are recomputed in
            backward instead of kept (same forms as ``auto_wrap_policy``; default none).
        compile: ``True`` or a dict of ``torch.compile`` options: compile each shard unit
            (each selected block) before sharding. Needs ``auto_wrap_policy``.
        reshard_after_forward: free gathered parameters after each unit's forward (``True``,
            least memory), keep them until backward (``False``, less communication), or an
            int: reshard to groups of that size.
        cpu_offload: keep sharded parameters, gradients and the optimizer step on the CPU
            (``True``, or a ``CPUOffloadPolicy``; pinned memory is used only with CUDA).
        mixed_precision: a ``MixedPrecisionPolicy`` overriding the one derived from the
            precision (``bf16-mixed`` → bfloat16 parameters, float32 gradient reduction).
        sharding_strategy: ``"full"`` (shard across all processes) or ``"hybrid"`` (HSDP:
            shard within groups of ``hsdp_shard_size`` processes, replicate across groups).
        hsdp_shard_size: processes per shard group for ``"hybrid"`` (default: devices per
            node, so parameters are sharded within a node and replicated across nodes).
        device_mesh: a ``DeviceMesh`` or a mesh shape to use instead (1-D: fsdp, 2-D: hsdp
            with dims (replicate, shard)).
        state_dict_type: ``"sharded"`` (default: one directory per checkpoint, every rank
            writes its shards, reshardable) or ``"full"`` (gathered on rank 0 into one
            ordinary file that a single-device user can load).
        async_save: write checkpoints in the background (``dcp.async_save`` for sharded
            ones, ``AsyncCheckpointIO`` for full ones); training waits only for the copy.
        process_group_backend, timeout, start_method: as for ``DDPStrategy``.
    """

    name = "fsdp"

    def __init__(
        self,
        accelerator=None,
        precision=None,
        checkpoint_io=None,
        cluster_environment=None,
        parallel_devices: Optional[List[torch.device]] = None,
        *,
        auto_wrap_policy: Policy = "auto",
        activation_checkpointing_policy: Policy = None,
        compile: Union[bool, Mapping[str, Any]] = False,
        reshard_after_forward: Union[bool, int] = True,
        cpu_offload: Union[bool, CPUOffloadPolicy] = False,
        mixed_precision: Optional[MixedPrecisionPolicy] = None,
        sharding_strategy: str = "full",
        hsdp_shard_size: Optional[int] = None,
        device_mesh: Any = None,
        state_dict_type: str = "sharded",
        async_save: bool = False,
        process_group_backend: Optional[str] = None,
        timeout: Any = None,
        start_method: str = "popen",
    ) -> None:
        if start_method != "popen":
            raise FulmenConfigError(
                f"FSDPStrategy(start_method={start_method!r}) is not supported: FSDP ranks are started by "
                "re-running your script (start_method='popen', the default) or by torchrun/srun"
            )
        super().__init__(
            accelerator, precision, checkpoint_io, cluster_environment, parallel_devices,
            process_group_backend=process_group_backend, timeout=timeout, start_method=start_method,
        )
        if state_dict_type not in STATE_DICT_TYPES:
            raise FulmenConfigError(f"FSDPStrategy(state_dict_type={state_dict_type!r}); use 'sharded' or 'full'")
        if sharding_strategy not in SHARDING_STRATEGIES:
            raise FulmenConfigError(
                f"FSDPStrategy(sharding_strategy={sharding_strategy!r}); use 'full' (fsdp) or 'hybrid' (hsdp)"
            )
        if hsdp_shard_size is not None and (not isinstance(hsdp_shard_size, int) or hsdp_shard_size < 1):
            raise FulmenConfigError(f"FSDPStrategy(hsdp_shard_size={hsdp_shard_size!r}) must be a positive integer")
        if not isinstance(reshard_after_forward, int) or (not isinstance(reshard_after_forward, bool) and reshard_after_forward < 1):
            raise FulmenConfigError(
                f"FSDPStrategy(reshard_after_forward={reshard_after_forward!r}) must be True, False or a positive int"
            )
        if not isinstance(cpu_offload, (bool, CPUOffloadPolicy)):
            raise FulmenConfigError(f"FSDPStrategy(cpu_offload={cpu_offload!r}) must be True/False or a CPUOffloadPolicy")
        if mixed_precision is not None and not isinstance(mixed_precision, MixedPrecisionPolicy):
            raise FulmenConfigError(
                f"FSDPStrategy(mixed_precision={mixed_precision!r}) must be a torch.distributed.fsdp.MixedPrecisionPolicy"
            )
        self.auto_wrap_policy = auto_wrap_policy
        self.activation_checkpointing_policy = activation_checkpointing_policy
        # Checked for form here; names are resolved against the model in setup_module.
        policy_predicate(auto_wrap_policy, "auto_wrap_policy")
        policy_predicate(activation_checkpointing_policy, "activation_checkpointing_policy")
        if compile and not isinstance(compile, (bool, Mapping)):
            raise FulmenConfigError(f"FSDPStrategy(compile={compile!r}) must be True/False or a dict of torch.compile options")
        self.compile_options: Optional[Dict[str, Any]] = dict(compile) if isinstance(compile, Mapping) else ({} if compile else None)
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = cpu_offload
        self.mixed_precision = mixed_precision
        self.sharding_strategy = sharding_strategy
        self.hsdp_shard_size = hsdp_shard_size
        self._mesh_option = device_mesh
        self.device_mesh = None
        self.state_dict_type = state_dict_type
        self.async_save = bool(async_save)
        # The registered name this configuration answers to, for messages.
        self.name = "hsdp" if sharding_strategy == "hybrid" else ("fsdp_cpu_offload" if cpu_offload else "fsdp")
        # Modules set up here, by their state root (the user's module), and which of them
        # owns each parameter, so that an optimizer can find its module's names.
        self._roots: List[nn.Module] = []
        self._owner: Dict[int, Tuple[nn.Module, nn.Parameter]] = {}
        # Parameters replaced by sharding: old object → (old, new), for optimizers that
        # were created before setup (``fabric.setup(model, optimizer)``).
        self._replaced: Dict[int, Tuple[nn.Parameter, nn.Parameter]] = {}
        self._pending_save = None
        self._checkpoint_group = None

    @property
    def sharded_state_dict(self) -> bool:
        """Whether checkpoints are sharded directories (``state_dict_type="sharded"``) rather than one
        full file."""
        return self.state_dict_type == "sharded"

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        for key in ("device_mesh", "_pending_save", "_checkpoint_group"):
            state[key] = None
        state["_roots"], state["_owner"], state["_replaced"] = [], {}, {}
        return state

    # ------------------------------------------------------------------ environment
    def setup_environment(self) -> None:
        """Check the precision, offload and mesh settings before any process starts, then start
        the ranks, form the process group and build the device mesh. A later stage of the same
        Trainer keeps the group and mesh (the sharded parameters live on them) and only makes the
        device current again."""
        if self._environment_ready:
            # A later stage of the same Trainer: the process group and the mesh (on which the
            # sharded parameters live) were kept; only the device is made current again.
            self.accelerator.setup_device(self.root_device)
            return
        # What cannot work raises here, before any process is started.
        self._check_precision()
        self._offload_policy()
        self._mesh_shape()
        super().setup_environment()
        self.device_mesh = self._build_mesh()
        if self.async_save:
            self._wrap_checkpoint_io_for_async()

    def _check_precision(self) -> None:
        name = getattr(self.precision, "name", "32-true") if self.precision is not None else "32-true"
        if name not in PRECISIONS:
            raise FulmenConfigError(
                f"strategy {self.name!r} does not support precision={name!r}; choose one of "
                f"{', '.join(repr(p) for p in PRECISIONS)}"
            )
        if name in _GPU_PRECISIONS and self.root_device.type != "cuda":
            raise FulmenConfigError(
                f"precision={name!r} with strategy {self.name!r} needs CUDA GPUs (float16 sharded "
                f"training with a gradient scaler); on {self.root_device.type} set precision='bf16-mixed' "
                "or precision='bf16-true'"
            )

    def _offload_policy(self):
        if self.cpu_offload is False:
            return None
        cuda = self.root_device.type == "cuda" and torch.cuda.is_available()
        if self.cpu_offload is True:
            return CPUOffloadPolicy(pin_memory=cuda)
        if getattr(self.cpu_offload, "pin_memory", False) and not cuda:
            raise FulmenConfigError(
                "cpu_offload=CPUOffloadPolicy(pin_memory=True) needs CUDA (pinned memory is page-locked "
                "host memory for GPU copies); on this machine pass cpu_offload=CPUOffloadPolicy(pin_memory=False) "
                "or cpu_offload=True"
            )
        return self.cpu_offload

    def _mesh_shape(self) -> Tuple[int, ...]:
        from torch.distributed.device_mesh import DeviceMesh

        option = self._mesh_option
        world = self.world_size
        if isinstance(option, DeviceMesh):
            if option.size() != world:
                raise FulmenConfigError(
                    f"device_mesh has {option.size()} devices but the job has {world} processes; "
                    "build the mesh over all of them"
                )
            return tuple(option.shape)
        if option is not None:
            shape = tuple(int(s) for s in option)
            if len(shape) not in (1, 2) or _product(shape) != world:
                raise FulmenConfigError(
                    f"device_mesh={option!r} must be (shard,) or (replicate, shard) with a product equal to the "
                    f"world size {world}"
                )
            return shape
        if self.sharding_strategy == "hybrid":
            shard = self.hsdp_shard_size or self.num_processes
            if world % shard:
                raise FulmenConfigError(
                    f"hsdp: the world size {world} is not a multiple of the shard group size {shard} "
                    f"(hsdp_shard_size={self.hsdp_shard_size}, devices={self.num_processes}); set "
                    "FSDPStrategy(hsdp_shard_size=...) to a divisor of the world size"
                )
            return (world // shard, shard)
        return (world,)

    def _build_mesh(self):
        from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

        if isinstance(self._mesh_option, DeviceMesh):
            return self._mesh_option
        shape = self._mesh_shape()
        names = ("shard",) if len(shape) == 1 else ("replicate", "shard")
        return init_device_mesh(self.root_device.type, shape, mesh_dim_names=names)

    def _wrap_checkpoint_io_for_async(self) -> None:
        from fulmen.io.async_checkpoint_io import AsyncCheckpointIO

        io = self.checkpoint_io
        if isinstance(io, FinishingCheckpointIO):
            return
        if not self.sharded_state_dict and not isinstance(io, AsyncCheckpointIO):
            io = AsyncCheckpointIO(io)  # full files: written by rank 0's background thread
        self.checkpoint_io = FinishingCheckpointIO(io, self._finish_pending_save)

    # ------------------------------------------------------------------ model
    def module_init_context(self, empty_init: Optional[bool] = None) -> ContextManager:
        """With ``empty_init=True`` the module is created on the meta device (no memory);
        ``setup_module`` shards it and then materialises each rank's shards only."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.precision.module_init_context())
        if empty_init:
            stack.enter_context(torch.device("meta"))
        return stack

    def _state_root(self, module: nn.Module) -> nn.Module:
        """The module whose parameter names checkpoints use: the user's module, not the
        Trainer's step dispatcher around it."""
        from fulmen.trainer.step_dispatch import StepDispatcher

        return module.module if isinstance(module, StepDispatcher) else module

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Convert the module for the precision, apply activation checkpointing and ``compile``,
        shard every ``auto_wrap_policy`` unit and then the root with ``fully_shard``, and
        materialise meta-device parameters. A module sharded by the user already is taken as it is."""
        if self.device_mesh is None:
            raise FulmenConfigError("FSDPStrategy.setup_module ran before setup_environment; set up the strategy first")
        if isinstance(module, FSDPModule) or any(isinstance(p, DTensor) for p in module.parameters()):
            self._register(module, [])  # sharded by the user already: take it as it is
            return module
        module = self.precision.convert_module(module)
        meta = has_meta_tensors(module)
        before = [(p, name) for name, p in module.named_parameters(remove_duplicate=False)]

        # Resolved against this model: "auto" reads its _no_split_modules, names are checked.
        units = select_modules(module, resolve_policy(module, self.auto_wrap_policy, "auto_wrap_policy"))
        checkpointed = resolve_policy(module, self.activation_checkpointing_policy, "activation_checkpointing_policy")
        apply_activation_checkpointing(select_modules(module, checkpointed))
        if self.compile_options is not None:
            if not units:
                raise FulmenConfigError(
                    "FSDPStrategy(compile=...) compiles each shard unit; choose the units (for example the "
                    "transformer block class) with auto_wrap_policy="
                )
            for unit in units:
                unit.compile(**self.compile_options)

        kwargs = dict(
            mesh=self.device_mesh,
            reshard_after_forward=self.reshard_after_forward,
            mp_policy=self.mixed_precision or mixed_precision_policy(self.precision),
        )
        offload = self._offload_policy()
        if offload is not None:
            kwargs["offload_policy"] = offload
        chosen = {id(u) for u in units}
        for submodule in reversed(list(module.modules())):  # innermost units first
            if id(submodule) in chosen:
                fully_shard(submodule, **kwargs)
        fully_shard(module, **kwargs)

        if meta:
            device = torch.device("cpu") if offload is not None else self.root_device
            # Non-persistent buffers are recomputed there (or refused): no file holds them.
            missing = materialize_meta_tensors(module, device)
            # A strict fulmen.finetune.load_pretrained deferred past setup fills every parameter and
            # persistent buffer of its module: only what no such load covers is worth a warning.
            loads = [(n, m._fulmen_pretrained) for n, m in module.named_modules() if getattr(m, "_fulmen_pretrained", None)]
            missing = [
                name for name in missing
                if not any(strict and (not owner or name == owner or name.startswith(owner + "."))
                           for owner, (_, _, strict) in loads)
            ]
            if missing and self.is_global_zero:
                warnings.warn(
                    f"modules created on the meta device without a reset_parameters() method hold "
                    f"uninitialised memory: {', '.join(missing[:10])}. Define reset_parameters() on them, or "
                    "load a checkpoint before training",
                    FulmenWarning,
                    stacklevel=2,
                )
        self._register(module, before)
        return module

    def _register(self, module: nn.Module, before: Sequence[Tuple[nn.Parameter, str]]) -> None:
        root = self._state_root(module)
        self._roots.append(root)
        for p in root.parameters():
            self._owner[id(p)] = (root, p)
        after = dict(module.named_parameters())
        for old, name in before:
            new = after.get(name)
            if new is not None and new is not old:
                self._replaced[id(old)] = (old, new)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Point an optimizer created before ``setup_module`` at the sharded parameters."""
        if not self._replaced:
            return optimizer
        for group in optimizer.param_groups:
            params = group["params"]
            for index, param in enumerate(params):
                entry = self._replaced.get(id(param))
                if entry is None or entry[0] is not param:
                    continue
                if optimizer.state.get(param):
                    raise FulmenConfigError(
                        "the optimizer already holds state for parameters that FSDP replaced with shards; "
                        "set up the optimizer before its first step (fabric.setup(model, optimizer)), or "
                        "create it from model.parameters() after fabric.setup_module(model)"
                    )
                params[index] = entry[1]
        return optimizer

    def _module_for(self, optimizer: torch.optim.Optimizer) -> Optional[nn.Module]:
        optimizer = _unwrap_optimizer(optimizer)
        for group in optimizer.param_groups:
            for param in group["params"]:
                entry = self._owner.get(id(param))
                if entry is not None and entry[1] is param:
                    return entry[0]
        return None

    @staticmethod
    def _is_sharded(module: nn.Module) -> bool:
        return any(isinstance(p, DTensor) for p in module.parameters())

    # ------------------------------------------------------------------ optimization
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> ContextManager:
        """Accumulate gradients locally: no reduce-scatter until the block is left."""
        if not enabled:
            return contextlib.nullcontext()
        units = [m for m in module.modules() if isinstance(m, FSDPModule)]
        if not units:
            return contextlib.nullcontext()
        return without_gradient_sync(units)

    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = False,
    ) -> torch.Tensor:
        """Clip by the norm of the *whole* gradient: every rank computes the same total from
        its shards (one all-reduce), then scales its shards."""
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        total = total_gradient_norm([p.grad for p in params], norm_type)
        if error_if_nonfinite and not bool(torch.isfinite(total)):
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is non-finite ({float(total)}), so it "
                "cannot be clipped; lower the learning rate or check the data, or pass error_if_nonfinite=False"
            )
        if params:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total

    # ------------------------------------------------------------------ state dicts
    def _options(self, full: bool):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full)

    def module_state_dict(self, module: nn.Module) -> Dict[str, Any]:
        """Sharded: the module's DTensors (no copy). Full: gathered, on rank 0 only (other
        ranks get ``{}``), in CPU memory."""
        if not self._is_sharded(module):
            return super().module_state_dict(module)
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=self._options(not self.sharded_state_dict))

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
        """Sharded: keyed by parameter name, with DTensor states, so that it loads at any
        world size. Full: gathered on rank 0 in ``torch.optim``'s positional format, which
        every strategy (and ``optimizer.load_state_dict``) reads."""
        optimizer = _unwrap_optimizer(optimizer)
        module = self._module_for(optimizer)
        if module is None:
            return optimizer.state_dict()
        if not optimizer.state:
            # Before the first step: asking torch for the state would initialise it with a
            # dummy step, changing what the next real step does.
            plain = optimizer.state_dict()
            if not self.sharded_state_dict:
                return plain
            return sharded.ids_to_fqn(plain, self._parameter_names(module, optimizer))
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = get_optimizer_state_dict(module, optimizer, options=self._options(not self.sharded_state_dict))
        if not self.sharded_state_dict:
            return sharded.fqn_to_ids(state) if state else {}
        return state

    def _parameter_names(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> List[str]:
        names = {id(p): n for n, p in module.named_parameters()}
        out = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in names:
                    raise FulmenConfigError(
                        f"the optimizer holds a parameter that is not part of {type(module).__name__}; "
                        "FSDP checkpoints need every optimized parameter to belong to the set-up module"
                    )
                out.append(names[id(p)])
        return out

    def load_module_state_dict(self, module: nn.Module, state: Dict[str, Any], strict: bool = True) -> None:
        """Load into a sharded module: a sharded checkpoint is read slice by slice into this rank's
        shards (resharding from any saved world size), full tensors are scattered."""
        if not self._is_sharded(module):
            if sharded.has_refs(state):
                from torch.distributed.checkpoint.state_dict import get_model_state_dict

                state = self._read_refs(state, get_model_state_dict(module), strict, "module state")
            return super().load_module_state_dict(module, state, strict=strict)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

        if sharded.has_refs(state):  # a sharded checkpoint: read this rank's slices in place
            state = self._read_refs(state, get_model_state_dict(module), strict, "module state")
            options = StateDictOptions(strict=strict)
        else:  # full tensors (a full or consolidated checkpoint, or an unsharded run's)
            options = StateDictOptions(full_state_dict=True, strict=strict)
        set_model_state_dict(module, state, options=options)

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
        """Load optimizer state saved by any world size into this rank's shards, matching
        parameters by name; a state saved before the first step restores only the hyperparameters."""
        optimizer = _unwrap_optimizer(optimizer)
        module = self._module_for(optimizer)
        if module is None:
            return optimizer.load_state_dict(state)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        names = self._parameter_names(module, optimizer)
        if not state.get("state"):
            # Saved before the first step: only hyperparameters. Loading through torch's
            # helpers would initialise a state the uninterrupted run does not have yet.
            plain = sharded.fqn_to_ids(state) if sharded.is_fqn_keyed(state) else state
            return optimizer.load_state_dict(plain)
        if sharded.has_refs(state):
            live = get_optimizer_state_dict(module, optimizer)
            state = self._read_refs(state, live, True, "optimizer state")
            options = StateDictOptions()
        else:
            if not sharded.is_fqn_keyed(state):
                state = sharded.ids_to_fqn(state, names)
            options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(module, optimizer, state, options=options)

    def _read_refs(self, saved: Any, live: Any, strict: bool, what: str) -> Any:
        resolved, loads = sharded.bind_refs(saved, live, strict, what)
        directories = {ref.directory for ref in sharded.iter_refs(saved)}
        for directory in directories:
            keys = {ref.key for ref in sharded.iter_refs(saved) if ref.directory == directory}
            sharded.dcp_load({k: v for k, v in loads.items() if k in keys}, directory)
        return resolved

    # ------------------------------------------------------------------ checkpoint files
    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """``sharded``: the directory ``path`` (all ranks write). ``full``: the file ``path``
        (rank 0 writes), readable without fulmen-strategy-fsdp."""
        from pathlib import Path

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options (got {storage_options!r})")
        self._finish_pending_save()
        path = Path(path)
        if not self.sharded_state_dict:
            if self.is_global_zero and path.is_dir():
                sharded.remove_path(path)  # a sharded checkpoint of the same name is replaced
            return super().save_checkpoint(checkpoint, path)
        metadata, tensors = sharded.split_sharded(checkpoint)
        tmp = sharded.temporary_directory(path)
        if self.is_global_zero:
            sharded.remove_path(tmp)  # left over by a save that was killed
            tmp.mkdir(parents=True)
            sharded.write_metadata(metadata, tmp, self.world_size)
        self.barrier("fsdp.save.prepare")
        if not tensors:
            self._publish(tmp, path)
            return
        import torch.distributed.checkpoint as dcp

        if self.async_save:
            # The copy keeps the checkpoint what it is now while training changes the
            # parameters; a separate group keeps the background collectives apart.
            snapshot = {key: value.detach().clone() for key, value in tensors.items()}
            future = dcp.async_save(snapshot, checkpoint_id=str(tmp), process_group=self._async_group())
            self._pending_save = (future, tmp, path)
            return
        dcp.save(tensors, checkpoint_id=str(tmp))
        self._publish(tmp, path)

    def _publish(self, tmp, path) -> None:
        # DCP's save returns on rank 0 only after every rank's files are written; the
        # barrier keeps the other ranks from looking for the directory before it is there.
        if self.is_global_zero:
            sharded.publish(tmp, path)
        self.barrier("fsdp.save.publish")

    def _async_group(self):
        if self._checkpoint_group is None:
            self._checkpoint_group = dist.new_group(backend="gloo")
        return self._checkpoint_group

    def _finish_pending_save(self) -> None:
        pending, self._pending_save = self._pending_save, None
        if pending is None:
            return
        future, tmp, path = pending
        from fulmen.errors import FulmenCheckpointError

        try:
            future.result()
        except BaseException as exc:
            raise FulmenCheckpointError(f"the background save of {str(path)!r} failed: {exc}") from exc
        self._publish(tmp, path)

    def load_checkpoint(self, path: Any) -> Dict[str, Any]:
        """A sharded directory gives its metadata with a ``ShardedTensorRef`` for each
        sharded tensor; they are read into the live module and optimizer by
        ``load_module_state_dict``/``load_optimizer_state_dict``, at whatever world size
        runs now. A file is read whole (a full checkpoint, or one written without FSDP)."""
        from pathlib import Path

        self._finish_pending_save()
        if Path(path).is_dir():
            return sharded.read_metadata(path, self.checkpoint_io)
        return super().load_checkpoint(path)

    def remove_checkpoint(self, path: Any) -> None:
        """Delete a checkpoint file or sharded directory (on rank zero), after any asynchronous
        save in flight has finished."""
        from pathlib import Path

        self._finish_pending_save()
        if Path(path).is_dir():
            if self.is_global_zero:
                sharded.remove_path(path)
            return
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        """Finish an asynchronous save in flight, then release what the stage used."""
        try:
            self._finish_pending_save()
        finally:
            super().teardown()

    def enable_sync_batchnorm(self) -> None:
        """Refused: FSDP2 shards do not synchronise BatchNorm statistics, so ``sync_batchnorm=True``
        raises a ``FulmenConfigError`` pointing at ``strategy="ddp"``."""
        raise FulmenConfigError(
            "sync_batchnorm=True is not supported by the fsdp strategy (FSDP2 shards do not "
            "synchronise BatchNorm statistics); use strategy='ddp', or set sync_batchnorm=False"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sharding_strategy={self.sharding_strategy!r}, state_dict_type="
            f"{self.state_dict_type!r}, cpu_offload={bool(self.cpu_offload)}, precision={self.precision!r})"
        )


def _unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer behind a ``FabricOptimizer`` (which routes ``step`` and
    ``state_dict`` back here), so torch's state-dict helpers see the real one."""
    from fulmen.fabric.wrappers import FabricOptimizer

    return optimizer.optimizer if isinstance(optimizer, FabricOptimizer) else optimizer


def _product(values: Iterable[int]) -> int:
    out = 1
    for value in values:
        out *= value
    return out
