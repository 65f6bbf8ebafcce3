"""``fulmen.Trainer``: fit/validate/test/predict loops written on the Fabric layer.

The Trainer resolves nothing about devices or precision itself: it builds a ``Fabric`` and
calls its verbs, so every strategy and precision behaves the same under both APIs.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from fulmen.errors import FulmenConfigError, FulmenUserCodeError, FulmenWarning
from fulmen.fabric.fabric import Fabric
from fulmen.fabric.respawn import RebuildsInWorkers
from fulmen.fabric.wrappers import DeviceDataLoader
from fulmen.plugins import config as plugin_config
from fulmen.trainer import checkpoint as ckpt
from fulmen.trainer import data as data_utils
from fulmen.trainer import fit_loop
from fulmen.trainer.eval_loop import run_evaluation
from fulmen.trainer.hook_relay import HookRelay
from fulmen.trainer.pretrained_weights import load_pending_weights
from fulmen.trainer.metrics import MetricStore
from fulmen.trainer.optim import parse_optimizers
from fulmen.trainer.profiling import resolve_profiler
from fulmen.trainer import preemption, spawn
from fulmen.trainer.run import run_stage
from fulmen.trainer.stages import STAGES
from fulmen.trainer.properties import TrainerProperties
from fulmen.strategies.base import steps_every_micro_batch
from fulmen.strategies.capabilities import SupportsSyncBatchNorm
from fulmen.strategies.launcher import runs_in_workers
from fulmen.utilities import rng
from fulmen.trainer.step_dispatch import StepDispatcher
from fulmen.trainer.setup_helpers import build_callbacks, build_loggers, parse_fast_dev_run, parse_val_check_interval


class Trainer(TrainerProperties, RebuildsInWorkers):
    """Runs a ``fulmen.Module``'s fit, validate, test and predict loops, and everything
    around them: devices, distributed strategies, precision, checkpoints, logging, callbacks.

    The arguments and their defaults are Lightning's. The ones that choose hardware
    (``accelerator``, ``strategy``, ``devices``, ``num_nodes``, ``precision``, ``plugins``)
    are resolved by name through the plugin registry, so a name registered by an installed
    plugin package works like a built-in one (``fulmen plugins`` lists them).

    Args:
        accelerator: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``, a plugin's name or an ``Accelerator``.
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ``"ddp_fork"``, a plugin's name (``"fsdp"``) or a ``Strategy``.
        devices: how many (``2``), which (``[0, 2]``, ``"0,2"``), ``-1`` for all, or ``"auto"``.
        num_nodes: machines taking part; each runs ``devices`` processes.
        precision: ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``, ``"bf16-true"``, ``"64-true"`` or a ``Precision``.
        logger: a logger, a list, a registered name, ``True`` (CSV under ``default_root_dir``) or ``False``.
        callbacks: callback objects, run in this order for each hook.
        fast_dev_run: run ``n`` batches (``True``: 1) of each stage, no checkpoints or logs, to find bugs fast.
        max_epochs, min_epochs, max_steps, min_steps, max_time: when fit stops (``min_*`` hold off an early stop).
        limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches: a fraction or a count of batches per epoch.
        overfit_batches: train and validate on the same few batches (a fraction or a count).
        val_check_interval: validate every fraction of an epoch or every ``n`` batches.
        check_val_every_n_epoch: validate every ``n`` epochs (``None``: count ``val_check_interval`` across epochs).
        num_sanity_val_steps: validation batches run before training (``-1``: all); catches evaluation bugs early.
        log_every_n_steps: how often logged values are read from the device and sent to loggers.
        enable_checkpointing, enable_progress_bar, enable_model_summary: the default callbacks.
        accumulate_grad_batches: micro-batches per optimizer step.
        gradient_clip_val, gradient_clip_algorithm: clip by ``"norm"`` (default) or ``"value"``.
        deterministic: ask torch for deterministic algorithms.
        detect_anomaly: stop with a clear error when the loss becomes NaN or infinite.
        inference_mode: evaluate under ``torch.inference_mode`` where the strategy allows (else ``no_grad``).
        use_distributed_sampler: give each process its share of the data under multi-process strategies.
        sync_batchnorm: synchronise BatchNorm statistics across processes (strategies that support it).
        default_root_dir: where logs and checkpoints go when nothing else says.
        plugins: precision, checkpoint IO or cluster environment objects, hook-implementing objects, or plugin names.
        allow_plugins, deny_plugins: which discovered plugins this Trainer loads.
        profiler: ``"simple"``, ``"advanced"``, ``"pytorch"``, a plugin's name or a ``fulmen.profilers.Profiler``; ``None``: no profiling, at no cost per step.

    Attributes:
        log_listeners: objects with a logger's ``log_metrics(metrics, step)`` and
            ``log_checkpoint(path, aliases)`` that receive, on rank 0, every row and checkpoint
            the loggers receive, without being loggers (a plugin's way to observe what is
            logged, e.g. fulmen-ray reporting rows to Ray; see docs/plugins.md).
    """

    def __init__(
        self,
        accelerator: Any = "auto",
        strategy: Any = "auto",
        devices: Any = "auto",
        num_nodes: int = 1,
        precision: Any = None,
        logger: Any = None,
        callbacks: Optional[Union[Any, Sequence[Any]]] = None,
        fast_dev_run: Union[int, bool] = False,
        max_epochs: Optional[int] = None,
        min_epochs: Optional[int] = None,
        max_steps: int = -1,
        min_steps: Optional[int] = None,
        max_time: Any = None,
        limit_train_batches: Union[int, float, None] = None,
        limit_val_batches: Union[int, float, None] = None,
        limit_test_batches: Union[int, float, None] = None,
        limit_predict_batches: Union[int, float, None] = None,
        overfit_batches: Union[int, float] = 0.0,
        val_check_interval: Union[int, float, None] = None,
        check_val_every_n_epoch: Optional[int] = 1,
        num_sanity_val_steps: Optional[int] = None,
        log_every_n_steps: Optional[int] = None,
        enable_checkpointing: Optional[bool] = None,
        enable_progress_bar: Optional[bool] = None,
        enable_model_summary: Optional[bool] = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: Optional[str] = None,
        deterministic: Optional[bool] = None,
        detect_anomaly: bool = False,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        sync_batchnorm: bool = False,
        default_root_dir: Optional[Union[str, os.PathLike]] = None,
        plugins: Optional[Sequence[Any]] = None,
        allow_plugins: Optional[Sequence[str]] = None,
        deny_plugins: Optional[Sequence[str]] = None,
        profiler: Any = None,
    ) -> None:
        self.fabric = Fabric(
            accelerator=accelerator, strategy=strategy, devices=devices, num_nodes=num_nodes,
            precision=precision, plugins=plugins, allow_plugins=allow_plugins, deny_plugins=deny_plugins,
        )
        self.strategy = self.fabric.strategy
        if sync_batchnorm:
            if not isinstance(self.strategy, SupportsSyncBatchNorm):
                raise FulmenConfigError(
                    f"sync_batchnorm=True, but the strategy {self.strategy.name or type(self.strategy).__name__!r} "
                    "cannot synchronise batch-norm statistics; use strategy='ddp' or set sync_batchnorm=False"
                )
            self.strategy.enable_sync_batchnorm()
        self.default_root_dir = str(default_root_dir) if default_root_dir is not None else os.getcwd()

        dev_run = parse_fast_dev_run(fast_dev_run)
        self.fast_dev_run = dev_run
        if dev_run:
            max_epochs, max_steps, num_sanity_val_steps, val_check_interval = 1, dev_run, 0, 1.0
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = dev_run
            logger = False if logger is None else logger
            enable_checkpointing = False if enable_checkpointing is None else enable_checkpointing
        if max_epochs is None and (max_steps is None or max_steps < 0) and max_time is None:
            max_epochs = 1000
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs or 0
        self.max_steps = -1 if max_steps is None else max_steps
        self.min_steps = min_steps or 0
        self.limit_train_batches = 1.0 if limit_train_batches is None else limit_train_batches
        self.limit_val_batches = 1.0 if limit_val_batches is None else limit_val_batches
        self.limit_test_batches = 1.0 if limit_test_batches is None else limit_test_batches
        self.limit_predict_batches = 1.0 if limit_predict_batches is None else limit_predict_batches
        self.overfit_batches = overfit_batches
        if overfit_batches:
            self.limit_train_batches = self.limit_val_batches = overfit_batches
        self.val_check_interval = parse_val_check_interval(val_check_interval, check_val_every_n_epoch)
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        self.log_every_n_steps = 50 if log_every_n_steps is None else int(log_every_n_steps)
        if self.log_every_n_steps < 1:
            raise FulmenConfigError(f"log_every_n_steps={log_every_n_steps} must be at least 1")
        if not isinstance(accumulate_grad_batches, int) or accumulate_grad_batches < 1:
            raise FulmenConfigError(f"accumulate_grad_batches={accumulate_grad_batches!r} must be a positive integer")
        self.accumulate_grad_batches = accumulate_grad_batches
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise FulmenConfigError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}; use 'norm' or 'value'")
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        self.detect_anomaly = detect_anomaly
        self.inference_mode = inference_mode
        self.use_distributed_sampler = use_distributed_sampler
        self.deterministic = bool(deterministic)
        if self.deterministic:
            _make_deterministic()

        logger = plugin_config.default_logger(logger, self.fabric._plugin_set)  # a distribution's default
        self.loggers = build_loggers(logger, self.fabric.registry, self.default_root_dir)
        self.log_listeners: List[Any] = []
        self.callbacks = build_callbacks(
            self, callbacks, enable_checkpointing, enable_progress_bar, enable_model_summary, max_time,
        )
        self._relay = HookRelay(self.fabric.plugin_manager)
        self.profiler = resolve_profiler(profiler, self.fabric.registry)  # self.trainer.profiler.profile("x") in user code
        self._profiling = None  # the stage's instrumentation while a profiler runs (fulmen.trainer.profiling)
        self._metrics = MetricStore(self.strategy.all_reduce, lambda: self.strategy.root_device)
        self._progress = ckpt.Progress()
        self.module = None
        self.datamodule = None
        self.optimizers: List[Any] = []
        self.lr_scheduler_configs: List[Any] = []
        self.should_stop = False
        self.state = "initializing"
        self.stage: Optional[str] = None  # fit/validate/test/predict while one runs
        self.sanity_checking = False
        self._evaluating = False  # inside an evaluation loop (also validation during fit)
        self.num_training_batches: Union[int, float] = 0
        self.num_val_batches: List[Union[int, float]] = []
        self._train_loader = None
        self._val_loaders: List[Any] = []
        self._has_validation = False
        self._val_check_batches: Optional[int] = None
        self._forward_module = None
        self._dispatcher = None
        self._module_setup_for = None  # the module the strategy wrapped for this stage
        self._configured_model = None  # the module configure_model ran for
        self._hparams_logged = False
        self._resume_from = None
        self._loggers_synchronized = False
        self._resume_checkpoint = None
        self._resume_path = None
        self._loaded_ckpt_path = None  # trainer.ckpt_path
        self._pending_rng = None
        self._preemption = preemption.PreemptionHandler()
        self._eval_batch_counts: List[Union[int, float]] = []
        self._strategy_torn_down = False
        self._micro_batch_steps = False  # the strategy hears of non-boundary micro-batches

    # ------------------------------------------------------------------ entry points
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None) -> None:
        """Train ``model``. Data comes from the dataloaders given, a ``datamodule`` or the
        module's own ``*_dataloader()`` methods. ``ckpt_path`` resumes exactly where a
        checkpoint left off: a path, ``"last"`` (the newest good one) or ``"best"``."""
        train_dataloaders, datamodule = data_utils.datamodule_in_place_of_loaders(train_dataloaders, datamodule, "train_dataloaders")
        if self._spawns():
            return spawn.run(self, "fit", model, dict(train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, datamodule=datamodule, ckpt_path=ckpt_path))
        self._resume_from = ckpt_path
        self._run("fit", model, datamodule, lambda: self._fit(train_dataloaders, val_dataloaders))

    def validate(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Run the validation loop once; returns one dict of logged metrics per dataloader."""
        dataloaders, datamodule = data_utils.datamodule_in_place_of_loaders(dataloaders, datamodule, "dataloaders")
        if self._spawns():
            return spawn.run(self, "validate", model, dict(dataloaders=dataloaders, ckpt_path=ckpt_path, verbose=verbose, datamodule=datamodule))
        return self._run("validate", model, datamodule, lambda: self._evaluate("validate", dataloaders, ckpt_path, verbose))

    def test(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Run the test loop once; returns one dict of logged metrics per dataloader."""
        dataloaders, datamodule = data_utils.datamodule_in_place_of_loaders(dataloaders, datamodule, "dataloaders")
        if self._spawns():
            return spawn.run(self, "test", model, dict(dataloaders=dataloaders, ckpt_path=ckpt_path, verbose=verbose, datamodule=datamodule))
        return self._run("test", model, datamodule, lambda: self._evaluate("test", dataloaders, ckpt_path, verbose))

    def predict(self, model=None, dataloaders=None, datamodule=None, ckpt_path=None):
        """Run ``predict_step`` over the data; returns its outputs (a list per dataloader when several)."""
        dataloaders, datamodule = data_utils.datamodule_in_place_of_loaders(dataloaders, datamodule, "dataloaders")
        if self._spawns():
            return spawn.run(self, "predict", model, dict(dataloaders=dataloaders, datamodule=datamodule, ckpt_path=ckpt_path))
        return self._run("predict", model, datamodule, lambda: self._evaluate("predict", dataloaders, ckpt_path, False))

    def _spawns(self) -> bool:
        return runs_in_workers(self.strategy.launcher)

    def _run(self, stage: str, model, datamodule, body):
        return run_stage(self, stage, model, datamodule, body)

    def _call(self, hook: str, **kwargs: Any) -> None:
        relay = self._relay
        if hook in relay.implemented:  # most hooks have no implementation: one set lookup
            relay.call(hook, self, self.module, kwargs)

    # ------------------------------------------------------------------ fit
    def _fit(self, train_dataloaders, val_dataloaders) -> None:
        self._setup_module_and_optimizers()
        self._prepare_train_data(train_dataloaders)
        self._prepare_val_data(val_dataloaders)
        self._progress = ckpt.Progress()
        self._pending_rng = None
        if self._resume_checkpoint is not None:
            ckpt.restore(self, self._resume_checkpoint, self._resume_path, fitting=True)
        self._log_hyperparams()
        self._call("on_fit_start")
        if self._has_validation and self.num_sanity_val_steps != 0 and not self._progress.global_step:
            self._run_sanity_check()
        with preemption.handling(self):
            fit_loop.run_fit(self)
        self._call("on_fit_end")
        for logger in self.loggers:
            logger.save()

    def _setup_module_and_optimizers(self) -> None:
        module = self.module

        def configure():
            optimizers, schedulers = parse_optimizers(module.configure_optimizers())
            self._check_optimizers(optimizers)
            return optimizers, schedulers

        self._configure_model()
        # One call: the strategy decides whether optimizers are built before or after the
        # module is wrapped (an engine may own both as one object). Every stage wraps anew.
        self._forward_module, self.optimizers, schedulers = self.fabric.setup_module_and_optimizers(
            self._dispatcher, configure
        )
        load_pending_weights(self.module)  # deferred by load_pretrained
        self._module_setup_for = module
        if not module.automatic_optimization:
            for opt in self.optimizers:
                opt._before_step.append(self._before_manual_step)
                opt._after_step.append(self._count_manual_step)
        self.lr_scheduler_configs = schedulers
        self._micro_batch_steps = steps_every_micro_batch(self.strategy)

    def _check_optimizers(self, optimizers: List[Any]) -> None:
        module = self.module
        if not optimizers and not getattr(self.strategy, "optimizer_from_config", False):
            raise FulmenUserCodeError("configure_optimizers returned no optimizer; return at least one to train")
        if module.automatic_optimization and len(optimizers) > 1:
            raise FulmenUserCodeError(
                f"configure_optimizers returned {len(optimizers)} optimizers; automatic optimization "
                "steps exactly one. Set self.automatic_optimization = False and step them in "
                "training_step with self.optimizers()"
            )
        if not module.automatic_optimization and (self.gradient_clip_val or self.accumulate_grad_batches > 1):
            raise FulmenConfigError(
                "gradient_clip_val and accumulate_grad_batches apply to automatic optimization; in "
                "manual optimization call self.clip_gradients(...) / accumulate in training_step"
            )

    def _configure_model(self) -> None:
        """Once per model (a later stage re-wraps the same layers): ``configure_model``,
        then the dispatcher that makes the step methods the wrapped module's forward."""
        if self._configured_model is self.module:
            return
        configure_model = getattr(self.module, "configure_model", None)
        if callable(configure_model):
            # Layers built here may be created empty (meta device) by sharding strategies,
            # which then materialise only this rank's shards in setup_module.
            with self.fabric.init_module(empty_init=True):
                configure_model()
        self._dispatcher = StepDispatcher(self.module)
        self._configured_model = self.module

    def _setup_module(self) -> None:
        """Wrap the module once per model: DDP and friends must see training_step as forward."""
        if self._module_setup_for is not self.module:
            self._configure_model()
            self._forward_module = self.fabric.setup_module(self._dispatcher)
            load_pending_weights(self.module)  # deferred by load_pretrained
            self._module_setup_for = self.module

    def _step(self, name: str, *args: Any) -> Any:
        """Run ``training_step`` through the strategy's wrapper (precision, gradient sync)."""
        dispatcher = self._dispatcher
        if dispatcher.step_name != name:  # nn.Module.__setattr__ is slow; set only on change
            dispatcher.step_name = name
        # This FabricModule is the Trainer's own and nobody hooks it: calling its forward
        # skips nn.Module.__call__'s bookkeeping. The wrapped module's __call__ (where DDP
        # and FSDP hook in) still runs.
        return self._forward_module.forward(*args)

    def _before_manual_step(self, raw_optimizer) -> None:
        if "on_before_optimizer_step" in self._relay.implemented:
            self.strategy.unscale_gradients(raw_optimizer)  # the hook sees true gradients
            self._call("on_before_optimizer_step", optimizer=raw_optimizer)

    def _count_manual_step(self) -> None:
        self._progress.global_step += 1

    def _prepare_train_data(self, explicit) -> None:
        loaders = data_utils.find_loaders("train", explicit, self.datamodule, self.module)
        if not loaders:
            raise FulmenConfigError(
                "no training data: pass train_dataloaders= to fit, a datamodule=, or define "
                "train_dataloader() on the module"
            )
        if len(loaders) > 1:
            raise FulmenConfigError("fit takes one training dataloader; combine datasets with ConcatDataset")
        loader = loaders[0]
        if self.overfit_batches:
            loader = data_utils.sequential(loader)
        # Count on the loader as this process will see it (its share under DDP).
        self._train_loader = self.fabric.setup_dataloaders(loader, use_distributed_sampler=self.use_distributed_sampler)
        loader = self._train_loader.dataloader
        count = data_utils.num_batches(loader, self.limit_train_batches, "train")
        data_utils.check_not_empty(loader, count, "train", self.limit_train_batches)
        if count == data_utils.INF and (self.max_steps is None or self.max_steps < 0) and self._max_time_callback() is None:
            # Lightning's rule: an epoch of unsized data ends when its iterator is exhausted
            # (RL buffers, streams that end). Only an endless stream never ends, so say so.
            warnings.warn(
                "the training dataloader has no length (an iterable dataset): each epoch ends when "
                "its iterator is exhausted, and an endless stream never ends; for one, set max_steps= "
                "(or max_time=, or limit_train_batches= as a batch count)",
                FulmenWarning,
                stacklevel=3,
            )
        self.num_training_batches = count
        interval = self.val_check_interval
        if isinstance(interval, float):
            self._val_check_batches = max(1, int(count * interval)) if count != data_utils.INF else None
            if count == data_utils.INF and interval != 1.0:
                raise FulmenConfigError(
                    "val_check_interval as a fraction needs a sized training dataloader; give a batch count"
                )
        else:
            self._val_check_batches = interval
        if isinstance(interval, int) and count != data_utils.INF and self.check_val_every_n_epoch is not None and interval > count:
            raise FulmenConfigError(
                f"val_check_interval={interval} is larger than the {count} training batches of an "
                "epoch; lower it or set check_val_every_n_epoch=None to count batches across epochs"
            )

    def _max_time_callback(self):
        from fulmen.callbacks.timer import Timer

        return next((cb for cb in self.callbacks if isinstance(cb, Timer) and cb.duration is not None), None)

    def _prepare_val_data(self, explicit) -> None:
        has_step = callable(getattr(self.module, "validation_step", None))
        if self.overfit_batches and has_step:
            loaders = [self._train_loader.dataloader]  # overfit: validate on the same batches
        else:
            loaders = data_utils.find_loaders("val", explicit, self.datamodule, self.module) if has_step else []
        if explicit is not None and not has_step:
            warnings.warn("validation data was given but the module has no validation_step; skipping validation", FulmenWarning, stacklevel=4)
        self._set_eval_loaders("val", loaders, self.limit_val_batches)
        self._has_validation = bool(self._val_loaders) and any(n != 0 for n in self.num_val_batches)

    def _set_eval_loaders(self, kind: str, loaders: List[Any], limit) -> None:
        wrapped = [self.fabric.setup_dataloaders(loader, use_distributed_sampler=self.use_distributed_sampler) for loader in loaders]
        counts = [data_utils.num_batches(w.dataloader, limit, kind) for w in wrapped]
        for w, count in zip(wrapped, counts):
            data_utils.check_not_empty(w.dataloader, count, kind, limit)
        if kind == "val":
            self._val_loaders, self.num_val_batches = wrapped, counts
        self._eval_batch_counts = counts
        return wrapped, counts

    def _train_iterator(self, start: int):
        """The epoch's batches from ``start`` on (mid-epoch resume seeks, it does not replay)."""
        self._train_loader.skip_next(start)  # the loop's progress decides, not the saved loader
        iterator = iter(self._train_loader)
        if self._pending_rng is not None:
            rng.restore(self._pending_rng, self.accelerator)
            self._pending_rng = None
        return iterator

    def _set_epoch_on_samplers(self) -> None:
        loader = self._train_loader.dataloader if isinstance(self._train_loader, DeviceDataLoader) else self._train_loader
        for candidate in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            set_epoch = getattr(candidate, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self.current_epoch)

    def _run_sanity_check(self) -> None:
        steps = self.num_sanity_val_steps
        limits = [n if steps < 0 else min(steps, n) for n in self.num_val_batches]
        self.sanity_checking = True
        try:
            self._call("on_sanity_check_start")
            run_evaluation(self, "sanity", self._val_loaders, limits)
            self._call("on_sanity_check_end")
        finally:
            self.sanity_checking = False
            self._metrics.drop_stage_outputs("sanity")

    def _run_validation(self) -> None:
        run_evaluation(self, "validate", self._val_loaders, self.num_val_batches)

    def _fit_done(self) -> bool:
        return fit_loop.fit_done(self)

    def _max_steps_reached(self) -> bool:
        return self.max_steps is not None and self.max_steps >= 0 and self.global_step >= self.max_steps

    def _stop_granted(self) -> bool:
        """``should_stop`` counts only once min_epochs/min_steps are done (Lightning's rule)."""
        if not self.should_stop:
            return False
        done_epochs = self.current_epoch + (1 if self._progress.epoch_complete else 0)
        return done_epochs >= self.min_epochs and self.global_step >= self.min_steps

    # ------------------------------------------------------------------ optimization helpers
    def _backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        implemented = self._relay.implemented  # checked here: these run every step
        if "on_before_backward" in implemented:
            self._call("on_before_backward", loss=loss)
        self.strategy.backward(loss, self.module, *args, **kwargs)
        if "on_after_backward" in implemented:
            self._call("on_after_backward")

    def _clip_gradients(self, optimizer) -> None:
        if not self.gradient_clip_val:
            return
        if self.gradient_clip_algorithm == "value":
            self.strategy.clip_gradients_value(self.module, optimizer, self.gradient_clip_val)
        else:
            self.strategy.clip_gradients_norm(self.module, optimizer, self.gradient_clip_val)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, stage: str, dataloaders, ckpt_path, verbose: bool):
        module = self.module
        table = STAGES[stage]
        step_name = table.step_name
        if not callable(getattr(module, step_name, None)):
            raise FulmenUserCodeError(f"trainer.{stage}() needs {type(module).__name__}.{step_name}(self, batch, batch_idx)")
        self._setup_module()
        checkpoint, path = ckpt.load_first_good(self, ckpt_path)
        self._loaded_ckpt_path = path
        if checkpoint is not None:
            ckpt.restore(self, checkpoint, path, fitting=False)
        kind = table.loader_kind
        loaders = data_utils.find_loaders(kind, dataloaders, self.datamodule, module)
        if not loaders:
            raise FulmenConfigError(
                f"no {kind} data: pass dataloaders= to trainer.{stage}(), a datamodule= or define "
                f"{kind}_dataloader() on the module"
            )
        limit = getattr(self, table.limit_attribute)
        wrapped, counts = self._set_eval_loaders(kind, loaders, limit)
        result = run_evaluation(self, stage, wrapped, counts)
        if verbose and stage != "predict" and self.is_global_zero:
            _print_results(stage, result)
        return result

    # ------------------------------------------------------------------ logging
    def _log_hyperparams(self) -> None:
        if self._hparams_logged or not self.loggers or not self.is_global_zero:
            return
        params = dict(self.module.hparams)
        if self.datamodule is not None:
            params.update(dict(getattr(self.datamodule, "hparams", {}) or {}))
        for logger in self.loggers:
            logger.log_hyperparams(params)
            log_graph = getattr(logger, "log_graph", None)  # loggers need not subclass Logger
            if callable(log_graph):
                log_graph(self.module)
        self._hparams_logged = True

    def _log_step_metrics(self) -> None:
        metrics = self._metrics.step_metrics_for_loggers()
        if metrics:
            self._log_to_loggers(metrics)

    def log_metrics(self, metrics: Dict[str, float]) -> None:
        """Send one row of plain floats to every logger at the current ``global_step``, with
        the ``epoch`` key added, from rank zero and never during the sanity check: what the
        loop does with logged metrics, for a callback that computes its own (learning rates)."""
        self._log_to_loggers(metrics)

    def _log_to_loggers(self, metrics: Dict[str, float]) -> None:
        if not metrics or not (self.loggers or self.log_listeners) or self.sanity_checking or not self.is_global_zero:
            return
        metrics = {**metrics, "epoch": float(self.current_epoch)}
        for logger in (*self.loggers, *self.log_listeners):
            logger.log_metrics(metrics, step=self.global_step)

    def _finalize_loggers(self, status: str) -> None:
        if not self.is_global_zero:
            return
        for logger in self.loggers:
            try:
                logger.finalize(status)
            except Exception as exc:  # never mask the error that ended training
                warnings.warn(f"logger {type(logger).__name__} failed to finalize: {exc}", FulmenWarning, stacklevel=2)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filepath: Union[str, os.PathLike], weights_only: bool = False, storage_options: Any = None) -> None:
        """Write a checkpoint of the current state through the strategy (atomically, with a
        checksum); ``weights_only`` leaves out what only a resume needs. Call it on every rank."""
        if self.module is None:
            raise FulmenConfigError("save_checkpoint needs a model; call fit/validate first")
        relay = self._relay
        between_stages = not relay._attached  # after fit: on_save_checkpoint still reaches callbacks
        if between_stages:
            relay.attach(self.module, self.datamodule, self.callbacks)
        try:
            checkpoint = ckpt.dump_checkpoint(self, weights_only=weights_only)
        finally:
            if between_stages:
                relay.detach()
        self.strategy.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        self.strategy.barrier("save_checkpoint")

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank zero only, so a multi-process run prints each line once."""
        if self.is_global_zero:
            print(*args, **kwargs)


def _make_deterministic() -> None:
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _print_results(stage: str, results: List[Dict[str, float]]) -> None:
    for index, metrics in enumerate(results):
        if not metrics:
            continue
        title = f"{stage} results" + (f" (dataloader {index})" if len(results) > 1 else "")
        width = max(len(k) for k in metrics)
        lines = [title, "-" * (width + 16)] + [f"{k:<{width}}  {v:.6g}" for k, v in sorted(metrics.items())]
        print("\n".join(lines))

