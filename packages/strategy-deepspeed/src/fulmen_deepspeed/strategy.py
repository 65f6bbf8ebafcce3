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

from torch import nn

from fulmen.errors import FulmenConfigError
from fulmen.strategies import DDPStrategy

from fulmen_deepspeed import config as cfg

_PIP = 'DS_BUILD_OPS=0 pip install "fulmen-strategy-deepspeed[deepspeed]"'


def import_deepspeed():
    """``deepspeed``, or an error that says how to install it."""
    try:
        import deepspeed
    except ImportError as exc:
        raise FulmenConfigError(f"the DeepSpeed strategies need deepspeed ({exc}); install it: {_PIP}") from None
    return deepspeed


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

    @property
    def stage(self) -> int:
        return int(self.config.get("zero_optimization", {}).get("stage", 0))

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["engine"] = None  # an engine belongs to its process group
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
        if precision != "32-true":
            # The config layer fills the fp16/bf16 blocks, but the engine's casting of
            # inputs and fulmen's precision object must not both act; not wired yet.
            raise FulmenConfigError(
                f"precision={precision!r} under DeepSpeed is not supported yet; use precision='32-true'"
            )
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
        if len(optimizers) != 1:
            raise FulmenConfigError(
                f"configure_optimizers returned {len(optimizers)} optimizers; DeepSpeedStrategy drives one engine "
                "with one optimizer: return a single optimizer (parameter groups for different settings)"
            )
        self.effective_config = self._resolved_config(module)
        # DeepSpeed refuses client optimizers other than Adam/Lamb under ZeRO unless told
        # otherwise; torch's optimizers (SGD in our tests) step its flat fp32 partitions
        # correctly, and the user chose this optimizer in configure_optimizers.
        self.effective_config.setdefault("zero_allow_untested_optimizer", True)
        module = self.precision.convert_module(module)
        engine, _, _, _ = deepspeed.initialize(
            model=module, optimizer=optimizers[0], config=self.effective_config, dist_init_required=False,
        )
        self.engine = engine
        return engine, [optimizers[0]], list(schedulers)

    def setup_module(self, module: nn.Module) -> nn.Module:
        raise FulmenConfigError(
            "DeepSpeedStrategy sets a module up together with its optimizer (one engine); "
            "under Fabric call fabric.setup(model, optimizer)"
        )

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
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        raise FulmenConfigError(
            "DeepSpeed checkpoints are not implemented yet; pass Trainer(enable_checkpointing=False)"
        )

    def load_checkpoint(self, path):
        raise FulmenConfigError("DeepSpeed checkpoints are not implemented yet")

    def teardown(self) -> None:
        """The engine goes with the process group it was built on; the next stage builds a
        new one."""
        if self.engine is not None:
            self.engine.destroy()
            self.engine = None
        self._first_loader = True
        super().teardown()
