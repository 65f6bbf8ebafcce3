"""``DeepSpeedStrategy``: ZeRO stages 1-3 through DeepSpeed's engine, on fulmen's public
strategy contract (``fulmen.strategies.base``), for the Trainer and Fabric alike.

The engine owns backward, the optimizer step, clipping and accumulation. The mapping:

* ``setup_module_and_optimizers``: the optimizers are built first (on the plain module), then
  ``deepspeed.initialize`` wraps module and client optimizer into one engine.
* ``backward``: ``engine.backward(loss, scale_wrt_gas=False)``. The Trainer has already
  divided the loss by ``accumulate_grad_batches``; DeepSpeed's default would divide again
  and the gradients would be ``1/accumulate`` too small.
* Accumulation boundaries come from the loop, not from DeepSpeed's micro-step counter: the
  Trainer enters ``no_backward_sync`` around every micro-batch that does not step, so
  ``backward`` knows before the reduction whether this one is a boundary and tells the
  engine (``set_gradient_accumulation_boundary``). A last, shorter window of an epoch then
  steps where the Trainer steps.
* ``optimizer_step`` is called after every micro-batch and calls ``engine.step()``, which
  steps (and clips, by its ``gradient_clipping``) only at a boundary.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.strategies import DDPStrategy

from fulmen_deepspeed import checkpointing as ckpt
from fulmen_deepspeed import config as cfg
from fulmen_deepspeed.precision import for_deepspeed

_PIP = 'DS_BUILD_OPS=0 pip install "fulmen-strategy-deepspeed[deepspeed]"'


def import_deepspeed():
    """``deepspeed``, or an error that says how to install it."""
    try:
        import deepspeed
    except ImportError as exc:
        raise FulmenConfigError(f"the DeepSpeed strategies need deepspeed ({exc}); install it: {_PIP}") from None
    return deepspeed


def _FabricModuleTypes():
    from fulmen.fabric.wrappers import FabricModule

    return (FabricModule,)


def _trainer_of(module: nn.Module) -> Optional[Any]:
    """The Trainer running ``module`` (the Trainer passes its step dispatcher, whose
    ``module`` is the user's ``fulmen.Module``), or None under Fabric."""
    for candidate in (module, getattr(module, "module", None)):
        trainer = getattr(candidate, "_trainer", None)
        if trainer is not None:
            return trainer
    return None


class DeepSpeedStrategy(DDPStrategy):
    """DeepSpeed ZeRO data parallelism, one process per device.

    ``stage``: the ZeRO stage (1: optimizer state sharded, 2: and gradients, 3: and
    parameters); ``None`` takes the config's, or 2 when there is no config.
    ``config``: a DeepSpeed config dict or the path of a JSON file. ``"auto"`` values (and
    missing keys) are filled from the Trainer: ``gradient_accumulation_steps`` from
    ``accumulate_grad_batches``, ``gradient_clipping`` from ``gradient_clip_val``,
    ``train_micro_batch_size_per_gpu`` from the training loader's ``batch_size``, the
    ``fp16``/``bf16`` blocks from ``precision``. An explicit value that disagrees raises
    ``FulmenConfigError`` naming both. ``offload_optimizer``/``offload_parameters`` move
    optimizer state / parameters to ``offload_device`` (``"cpu"`` or ``"nvme"`` with
    ``nvme_path``). Process options (``timeout``, ``start_method``, ...) are DDP's.
    """

    name = "deepspeed"
    #: The engine's hooks and gloo's collectives refuse inference tensors.
    supports_inference_mode = False

    def __init__(
        self,
        stage: Optional[int] = None,
        config: Union[None, str, Path, Dict[str, Any]] = None,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        offload_device: str = "cpu",
        nvme_path: Optional[str] = None,
        accelerator=None,
        precision=None,
        checkpoint_io=None,
        cluster_environment=None,
        parallel_devices=None,
        process_group_backend: Optional[str] = None,
        timeout=None,
        start_method: str = "popen",
    ) -> None:
        super().__init__(
            accelerator, precision, checkpoint_io, cluster_environment, parallel_devices,
            process_group_backend=process_group_backend, timeout=timeout, start_method=start_method,
        )
        user = cfg.load_user_config(config)
        if stage is None and "stage" not in user.get("zero_optimization", {}):
            stage = 2
        preset = cfg.preset_config(stage, offload_optimizer, offload_parameters, offload_device, nvme_path)
        #: The config before the Trainer's settings are filled in (checked at construction).
        self.config: Dict[str, Any] = cfg.merge_preset(user, preset)
        #: The config given to ``deepspeed.initialize`` (set at setup).
        self.effective_config: Optional[Dict[str, Any]] = None
        self.engine = None
        self._accumulating = False
        self._micro_batch_pending = False
        self._first_loader = True
        self._optimizer_loaded_from: Optional[str] = None
        self._exit_hook = False
        self._engine_trains = False
        self._config_dir: Optional[str] = None

    @property
    def precision(self):
        """The engine owns precision; any precision given becomes its DeepSpeed stand-in
        (``fulmen_deepspeed.precision``), and an unsupported one is refused here."""
        return self._precision

    @precision.setter
    def precision(self, value) -> None:
        self._precision = for_deepspeed(value)

    @property
    def stage(self) -> int:
        return int(self.config.get("zero_optimization", {}).get("stage", 0))

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["engine"] = None  # an engine belongs to its process group
        state["_exit_hook"] = False
        return state

    # ------------------------------------------------------------------ setup
    def setup_environment(self) -> None:
        """DDP's process group first (fulmen's launcher, torchrun or SLURM formed it), then
        DeepSpeed's communication layer on top of that same group."""
        super().setup_environment()
        deepspeed = import_deepspeed()
        # DeepSpeed reads the layout from the environment (a single process that fulmen did
        # not launch has none); fulmen's cluster environment is the source of truth.
        for key, value in (("LOCAL_RANK", self.local_rank), ("RANK", self.global_rank), ("WORLD_SIZE", self.world_size)):
            os.environ.setdefault(key, str(value))
        deepspeed.init_distributed(
            dist_backend=self._backend(), auto_mpi_discovery=False, timeout=self.timeout,
            dist_init_required=False, verbose=False,
        )

    def _resolved_config(self, module: nn.Module) -> Dict[str, Any]:
        trainer = _trainer_of(module)
        precision = getattr(self.precision, "name", "32-true")
        resolved = cfg.resolve_config(
            self.config,
            accumulate_grad_batches=getattr(trainer, "accumulate_grad_batches", None),
            gradient_clip_val=getattr(trainer, "gradient_clip_val", None),
            gradient_clip_algorithm=getattr(trainer, "gradient_clip_algorithm", None),
            precision=precision,
            world_size=self.world_size,
        )
        micro = resolved.get("train_micro_batch_size_per_gpu", cfg.AUTO)
        # The training loader is processed after this call (a gap in the contract): a
        # placeholder now, the loader's batch size in process_dataloader.
        self._micro_batch_pending = micro == cfg.AUTO
        if self._micro_batch_pending:
            resolved["train_micro_batch_size_per_gpu"] = 1
            resolved.pop("train_batch_size", None)
        return resolved

    def setup_module_and_optimizers(self, module: nn.Module, configure_optimizers):
        """Optimizers first, on the plain module; then one engine from the module and the
        client optimizer. Returns the engine (forward goes through it), the client
        optimizer (the schedulers were built on it; its ``param_groups`` are the ones
        the engine's optimizer steps with) and the schedulers."""
        deepspeed = import_deepspeed()
        optimizers, schedulers = configure_optimizers()
        if len(optimizers) > 1:
            raise FulmenConfigError(
                f"configure_optimizers returned {len(optimizers)} optimizers; a DeepSpeed engine steps one "
                "optimizer. Return a single optimizer (parameter groups for different settings); for several "
                "models trained in turn with their own optimizers (a GAN), use strategy='ddp' or 'fsdp'"
            )
        if not optimizers and "optimizer" not in self.config:
            raise FulmenConfigError(
                "configure_optimizers returned no optimizer and the DeepSpeed config has no \"optimizer\" block; "
                "return one from configure_optimizers or describe it in the config"
            )
        previous = self.engine
        if previous is not None and previous.module is not module and _trainer_of(module) is None:
            raise FulmenConfigError(
                "this DeepSpeedStrategy already drives an engine for another model; DeepSpeed trains one "
                "model per strategy: set up a single model (one module holding the sub-models, one optimizer)"
            )
        self.effective_config = self._resolved_config(module)
        # DeepSpeed refuses client optimizers other than Adam/Lamb under ZeRO unless told
        # otherwise; torch's optimizers (SGD in our tests) step its flat fp32 partitions
        # correctly, and the user chose this optimizer in configure_optimizers.
        self.effective_config.setdefault("zero_allow_untested_optimizer", True)
        self._release_engine()
        # No precision.convert_module: the engine casts the module itself (fp16/bf16 blocks)
        # and keeps the fp32 master weights; casting first would lose them.
        if optimizers:
            engine, _, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizers[0], config=self.effective_config, dist_init_required=False,
            )
            client = optimizers[0]  # the schedulers were built on it; its param_groups are the engine's
        else:
            # The config's optimizer (and scheduler, which the engine steps at each boundary).
            trainable = [p for p in module.parameters() if p.requires_grad]
            engine, client, _, _ = deepspeed.initialize(
                model=module, model_parameters=trainable, config=self.effective_config, dist_init_required=False,
            )
        self._keep_engine(engine, trains=True)
        self._write_effective_config(module)
        return engine, [client], list(schedulers)

    @property
    def optimizer_from_config(self) -> bool:
        """Whether the config describes an optimizer, built by the engine when
        ``configure_optimizers`` returns none (read by the Trainer)."""
        return "optimizer" in self.config

    def module_init_context(self, empty_init: Optional[bool] = None):
        """Under ZeRO-3 the model is built inside ``deepspeed.zero.Init``: each parameter is
        partitioned as it is created, so no process ever holds the whole model
        (``configure_model``, ``Fabric.init_module()``)."""
        if self.stage < 3:
            return super().module_init_context(empty_init)
        deepspeed = import_deepspeed()
        zero = {k: v for k, v in self.config.get("zero_optimization", {}).items() if v != cfg.AUTO}
        init_config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero}
        block = cfg.PRECISION_BLOCKS.get(getattr(self.precision, "name", "32-true"))
        if block is not None:
            init_config[block] = {"enabled": True}
        remote = zero.get("offload_param", {}).get("device")
        # The dtype comes from the config's fp16/bf16 blocks: DeepSpeed 0.19 ignores an explicit
        # ``dtype=`` where the accelerator lacks float16 (the CPU) and builds in bfloat16.
        return deepspeed.zero.Init(config_dict_or_path=init_config, remote_device=remote)

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Evaluation without training (``validate``/``test``/``predict`` on their own, or
        ``fabric.setup(model)``): an engine without optimizer. ZeRO-3 still partitions the
        parameters (gathered layer by layer in forward); stages 1 and 2 shard only optimizer
        state and gradients, which evaluation does not have, so their engine is stage 0.
        After ``fit`` the Trainer keeps the training engine instead (see ``teardown``)."""
        deepspeed = import_deepspeed()
        if self.engine is not None and self.engine.module is module:
            return self.engine
        self._release_engine()
        config = self._resolved_config(module)
        config.pop("zero_allow_untested_optimizer", None)
        if self.stage < 3:
            config["zero_optimization"] = {"stage": 0}
        self.effective_config = config
        engine, _, _, _ = deepspeed.initialize(model=module, config=config, dist_init_required=False)
        self._keep_engine(engine, trains=False)
        return engine

    def _keep_engine(self, engine, trains: bool) -> None:
        """The engine lives until a new one replaces it or the process ends. At exit it is
        released before the process group (atexit runs last-registered first; DDP registered
        the group's orderly destroy when it created it), so no ZeRO-3 hook or DeepSpeed
        communication state outlives the group it talks through."""
        self.engine = engine
        # An evaluation engine has no optimizer of ours (under ZeRO-3 its ``optimizer`` is
        # DeepSpeed's parameter-offload helper, not None): it loads consolidated weights.
        self._engine_trains = trains
        if not self._exit_hook:
            import atexit

            atexit.register(self._release_engine)
            self._exit_hook = True

    def _release_engine(self) -> None:
        if self.engine is not None:
            self.engine.destroy()
            self.engine = None
        self._first_loader = True

    def _write_effective_config(self, module: nn.Module) -> None:
        """``deepspeed_config.json`` in the run's log directory (rank 0): what the engine was
        really given once "auto" values were filled, for the run's record."""
        trainer = _trainer_of(module)
        directory = getattr(trainer, "log_dir", None) if trainer is not None else None
        self._config_dir = directory
        self._rewrite_effective_config()

    def _rewrite_effective_config(self) -> None:
        directory = self._config_dir
        if directory is None or not self.is_global_zero:
            return
        import json

        from fulmen.io.atomic import atomic_write

        path = Path(directory) / "deepspeed_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.effective_config, indent=2, sort_keys=True, default=str).encode()
        atomic_write(path, lambda handle: handle.write(text))

    def process_dataloader(self, dataloader: Any) -> Any:
        """DDP's distributed sampler. The first loader after setup is the training loader
        (the Trainer and Fabric scripts prepare it first): its batch size fills an
        ``"auto"`` micro-batch size, or must equal an explicit one."""
        if self.engine is not None and self._first_loader:
            self._first_loader = False
            batch_size = getattr(dataloader, "batch_size", None)
            if isinstance(batch_size, int):
                if self._micro_batch_pending:
                    self.engine.set_train_micro_batch_size(batch_size)
                    self.effective_config["train_micro_batch_size_per_gpu"] = batch_size
                    self._micro_batch_pending = False
                    self._rewrite_effective_config()
                elif self.effective_config["train_micro_batch_size_per_gpu"] != batch_size:
                    raise FulmenConfigError(
                        "the DeepSpeed config says train_micro_batch_size_per_gpu="
                        f"{self.effective_config['train_micro_batch_size_per_gpu']!r} but the training loader has "
                        f"batch_size={batch_size!r}; make them equal or set it to \"auto\""
                    )
        return super().process_dataloader(dataloader)

    # ------------------------------------------------------------------ optimization
    @contextlib.contextmanager
    def _accumulation(self) -> Iterator[None]:
        previous, self._accumulating = self._accumulating, True
        try:
            yield
        finally:
            self._accumulating = previous

    def no_backward_sync(self, module: nn.Module, enabled: bool = True):
        """Marks a micro-batch that does not step; DeepSpeed defers its reduction itself."""
        return self._accumulation() if enabled else contextlib.nullcontext()

    def forward_context(self):
        return contextlib.nullcontext()  # 32-true only for now; DeepSpeed casts for fp16/bf16

    def backward(self, tensor, module, *args: Any, **kwargs: Any) -> None:
        engine = self.engine
        engine.set_gradient_accumulation_boundary(not self._accumulating)
        engine.backward(tensor, scale_wrt_gas=False)

    def optimizer_step(self, optimizer, closure=None, boundary: bool = True):
        """Every micro-batch: the engine steps (and clips) at a boundary only."""
        self.engine.step()
        return None

    def zero_grad(self, optimizer, set_to_none: bool = True) -> None:
        """The engine clears its gradients in ``step``."""

    def unscale_gradients(self, optimizer) -> None:
        """DeepSpeed's loss scaler unscales inside ``step``; nothing to do before."""

    def clip_gradients_norm(self, module, optimizer, max_norm, norm_type=2.0, error_if_nonfinite=False):
        """DeepSpeed clips inside ``step`` by its config's ``gradient_clipping`` (filled from
        the Trainer's ``gradient_clip_val``); a different value here would be ignored by the
        engine, so it raises."""
        configured = (self.effective_config or {}).get("gradient_clipping", 0.0)
        if float(norm_type) != 2.0 or float(max_norm) != float(configured):
            raise FulmenConfigError(
                f"clip_gradients(max_norm={max_norm}, norm_type={norm_type}) but the DeepSpeed engine clips the "
                f"2-norm to gradient_clipping={configured} inside its step; set gradient_clipping in the config "
                "(or Trainer(gradient_clip_val=...)) instead"
            )
        return None

    def clip_gradients_value(self, module, optimizer, clip_val) -> None:
        raise FulmenConfigError("DeepSpeed clips gradients by norm only; use gradient_clip_algorithm='norm'")

    # ------------------------------------------------------------------ state
    # The engine's module and optimizer state live in DeepSpeed's files; the checkpoint dict
    # carries markers in their place (``fulmen_deepspeed.checkpointing``).
    def module_state_dict(self, module: nn.Module) -> Dict[str, Any]:
        return ckpt.marker("module")

    def optimizer_state_dict(self, optimizer) -> Dict[str, Any]:
        return ckpt.marker("optimizer")

    def load_module_state_dict(self, module: nn.Module, state: Dict[str, Any], strict: bool = True) -> None:
        """From a DeepSpeed checkpoint directory: a training engine loads everything DeepSpeed
        saved (weights, optimizer partitions, loss scaler, step counters; at another world size
        through a universal checkpoint); an evaluation engine loads the consolidated weights.
        From full weights (one file): loaded into the possibly partitioned parameters."""
        target = module.module if isinstance(module, _FabricModuleTypes()) else module
        if ckpt.is_marker(state):
            path = state.get("path")
            if path is None:
                raise FulmenConfigError("a DeepSpeed checkpoint marker without a directory cannot be loaded")
            if self.engine is not None and self._engine_trains:
                ckpt.load_into_engine(self, self.engine, path, strict=strict)
                self._optimizer_loaded_from = path
                return
            from fulmen_deepspeed import convert

            state = convert.read_full_state_dict(path)
        ckpt.load_full_weights(self, self.engine, target, state, strict)

    def load_optimizer_state_dict(self, optimizer, state: Dict[str, Any]) -> None:
        """Loaded with the weights (one DeepSpeed call); a torch optimizer state from a single
        file cannot be split into ZeRO partitions and is refused with what to do instead."""
        if ckpt.is_marker(state):
            if self._optimizer_loaded_from != state.get("path"):
                raise FulmenConfigError(
                    "a DeepSpeed optimizer state is loaded together with its module: load the module first "
                    "(fabric.load(path, {'model': model, 'optimizer': optimizer}))"
                )
            return
        raise FulmenCheckpointError(
            "this checkpoint holds a torch optimizer state (a single-file checkpoint, e.g. a consolidated one or "
            "one written without DeepSpeed), which DeepSpeed's partitioned optimizer cannot take; resume from the "
            "DeepSpeed checkpoint directory (any number of processes), or start a new fit from the weights: "
            "Module.load_from_checkpoint(path)"
        )

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """A DeepSpeed checkpoint directory at ``path`` (every rank writes its partitions)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options (got {storage_options!r})")
        if self.engine is None:
            raise FulmenConfigError("DeepSpeedStrategy.save_checkpoint needs the engine: set up the model first")
        ckpt.save(self, self.engine, checkpoint, path)

    def load_checkpoint(self, path):
        """A DeepSpeed directory: verified whole (checksums, no foreign files, weights-only
        loadable) before anything in it is unpickled; returns fulmen's part, with markers that
        ``load_module_state_dict`` resolves once the engine exists. A file: read as usual."""
        if ckpt.is_deepspeed_checkpoint(path):
            return ckpt.load_metadata(path)
        return super().load_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        if Path(path).is_dir():
            if self.is_global_zero:
                from fulmen.io.atomic import remove_path

                remove_path(path)
            return
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        """The engine stays: after ``fit``, ``validate``/``test``/``predict`` and the user's own
        forward passes run through it (under ZeRO-3 the parameters are partitions only the
        engine can gather: destroying it broke evaluation after fit in Lightning, #14090). A
        new ``fit`` or another model replaces it; process exit releases it."""
        self._first_loader = True
        super().teardown()
