"""One fit/validate/test/predict from start to end: what every stage shares.

Attaching the run's hook implementations, (re)joining the strategy's environment,
datamodule and module setup, failure handling (``on_exception``, loggers finalised with
the right status, preemption exit) and the teardown that always runs, in that order.
"""

from __future__ import annotations

from typing import Any, Callable

from fulmen.errors import FulmenConfigError
from fulmen.trainer import checkpoint as ckpt
from fulmen.trainer import preemption, profiling
from fulmen.trainer.preemption import Preempted
from fulmen.trainer.stages import STAGES


def run_stage(trainer, stage: str, model, datamodule, body: Callable[[], Any]) -> Any:
    """Run ``body`` as stage ``stage`` of ``trainer`` with ``model``; returns its result."""
    from fulmen.module import Module

    model = model if model is not None else trainer.module
    if model is None:
        raise FulmenConfigError(f"trainer.{stage}() needs a model: trainer.{stage}(model, ...)")
    if not isinstance(model, Module):
        raise FulmenConfigError(
            f"trainer.{stage}() takes a fulmen.Module, got {type(model).__name__}; subclass "
            "fulmen.Module (or use fulmen.Fabric to train a plain nn.Module)"
        )
    trainer.module = model
    trainer.datamodule = datamodule if datamodule is not None else trainer.datamodule
    model.trainer = trainer
    if trainer.datamodule is not None:
        trainer.datamodule.trainer = trainer
    trainer.state = STAGES[stage].state
    trainer.stage = stage
    trainer.should_stop = False
    trainer._relay.attach(model, trainer.datamodule, trainer.callbacks)
    if trainer._strategy_torn_down:  # a previous stage released the devices/process group
        trainer.strategy.setup_environment()
        trainer._strategy_torn_down = False
    try:
        if trainer.datamodule is not None:
            trainer.datamodule.prepare_data()
            trainer.datamodule.setup(stage=stage)
        if trainer.world_size > 1 and not trainer._loggers_synchronized:
            for logger in trainer.loggers:
                logger.synchronize(trainer.strategy)
            trainer._loggers_synchronized = True
        if stage == "fit":
            # Read the checkpoint before callbacks set up: loggers must get their old
            # versions back first, so every directory derived from them is the same.
            trainer._resume_checkpoint, trainer._resume_path = ckpt.load_first_good(trainer, trainer._resume_from)
            trainer._loaded_ckpt_path = trainer._resume_path
            if trainer._resume_checkpoint is not None:
                ckpt.restore_before_setup(trainer, trainer._resume_checkpoint)
        profiling.start(trainer, stage)  # after the loggers' versions are back: it reads log_dir
        trainer._call("setup", stage=stage)
        model.setup(stage=stage)
        result = body()
    except Preempted as exc:
        trainer.state = "interrupted"
        trainer._finalize_loggers("interrupted")
        preemption.exit_after_preemption(trainer, exc)
    except BaseException as exc:
        trainer.state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        trainer._call("on_exception", exception=exc)
        trainer._finalize_loggers("failed" if trainer.state == "failed" else "interrupted")
        raise
    finally:
        try:
            trainer._call("teardown", stage=stage)
            model.teardown(stage=stage)
            if trainer.datamodule is not None:
                trainer.datamodule.teardown(stage=stage)
        finally:
            trainer._relay.detach()
            trainer._resume_checkpoint = None
            try:
                trainer.strategy.checkpoint_io.teardown()  # waits for background writes
            finally:
                # Release what the stage took (devices, background writers); the next stage
                # sets the environment up again and wraps the module anew.
                trainer._strategy_torn_down = True
                trainer._module_setup_for = None
                try:
                    trainer.strategy.teardown()
                finally:
                    profiling.finish(trainer)  # the plain code path back, then the report
    trainer.state = "finished"
    if stage == "fit":
        trainer._finalize_loggers("success")
    return result

