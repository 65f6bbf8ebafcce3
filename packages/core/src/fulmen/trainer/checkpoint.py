"""What a Trainer checkpoint holds, and putting it back.

Everything is plain data and tensors (the file is read with ``weights_only=True``): module,
optimizers, schedulers, precision scaler, loop progress, stateful callbacks under stable
keys, hyperparameters and versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch

from fulmen.errors import FulmenCheckpointError, FulmenConfigError, FulmenWarning
from fulmen.trainer import metric_objects
from fulmen.utilities import rng
from fulmen.module import HPARAMS_KEY

FORMAT_NAME = "fulmen.checkpoint"
FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where the loop is; enough to continue with the batch that would have come next."""

    current_epoch: int = 0
    global_step: int = 0
    batch_idx: int = 0  # batches of the current epoch already consumed
    total_batches: int = 0  # across epochs (val_check_interval without epochs)
    epoch_complete: bool = False
    validating: bool = False  # saved from inside a validation run (on_validation_end)
    # Where in the loop the state was captured, so a resumed run first does what the first
    # run still did after that point (a kill may land anywhere after the file is written):
    # "batch_end": inside on_train_batch_end (ModelCheckpoint(every_n_train_steps)); the
    #   batch's log row, epoch-interval schedulers, validation (unless ``validating``: saved
    #   in that validation) and the stop check are pending, then the epoch end if complete.
    # "boundary": the batch is done (the preemption save); the stop check is pending.
    # "epoch_end": inside on_train_epoch_end; the epoch's log row, plateau schedulers and
    #   the epoch count are pending.
    # "": elsewhere; an incomplete epoch continues with its next batch.
    phase: str = ""
    step_log_due: bool = False  # the batch's metrics row is due (log_every_n_steps)
    resuming_mid_epoch: bool = False

    def state_dict(self) -> Dict[str, Any]:
        state = asdict(self)
        state.pop("resuming_mid_epoch")
        state["epoch_complete"] = self.epoch_complete
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.current_epoch = int(state["current_epoch"])
        self.global_step = int(state["global_step"])
        self.batch_idx = int(state.get("batch_idx", 0))
        self.total_batches = int(state.get("total_batches", 0))
        self.phase = str(state.get("phase", ""))
        self.step_log_due = bool(state.get("step_log_due", False))
        self.validating = bool(state.get("validating", False)) and self.phase == "batch_end"
        self.epoch_complete = bool(state.get("epoch_complete")) and bool(self.phase)
        if state.get("epoch_complete") and not self.phase:
            # Saved after the epoch's last batch: the next run starts a fresh epoch.
            self.current_epoch += 1
            self.batch_idx = 0
        self.resuming_mid_epoch = self.batch_idx > 0 or bool(self.phase)


def state_key(callback: Any) -> str:
    key = getattr(callback, "state_key", None)
    return key if isinstance(key, str) and key else type(callback).__qualname__


def dump_checkpoint(trainer, weights_only: bool = False) -> Dict[str, Any]:
    from fulmen import __version__

    module = trainer.module
    checkpoint: Dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "fulmen_version": __version__,
        "pytorch_version": str(torch.__version__),
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "state_dict": trainer.strategy.module_state_dict(module),
        HPARAMS_KEY: dict(module.hparams),
    }
    if trainer.datamodule is not None and getattr(trainer.datamodule, "hparams", None):
        checkpoint["datamodule_hyper_parameters"] = dict(trainer.datamodule.hparams)
    if not weights_only:
        progress = trainer._progress.state_dict()
        progress["validating"] = bool(trainer.validating)
        progress["should_stop"] = bool(trainer.should_stop)  # e.g. EarlyStopping just decided
        checkpoint["loops"] = {"fit": progress}
        checkpoint["metrics"] = trainer._metrics.state_dict(module)
        # torchmetrics states are not in the module's state_dict (persistent=False).
        metric_states = metric_objects.capture_states(module, trainer.strategy)
        if metric_states is not None:
            checkpoint["metric_states"] = metric_states
        checkpoint["optimizer_states"] = [
            trainer.strategy.optimizer_state_dict(opt.optimizer) for opt in trainer.optimizers
        ]
        checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
        checkpoint["precision"] = trainer.strategy.precision.state_dict()
        checkpoint["callbacks"] = {
            state_key(cb): cb.state_dict() for cb in trainer.callbacks if callable(getattr(cb, "state_dict", None))
        }
        if trainer.datamodule is not None and callable(getattr(trainer.datamodule, "state_dict", None)):
            checkpoint["datamodule"] = trainer.datamodule.state_dict()
        if trainer._train_loader is not None:
            checkpoint["train_dataloader"] = trainer._train_loader.state_dict()
        # Each rank draws its own random numbers (dropout masks differ): keep all of them.
        checkpoint["rng"] = rng.capture_per_rank(trainer.strategy)
        for logger in trainer.loggers:
            logger.save()  # metrics up to this checkpoint are on disk before it exists
        checkpoint["loggers"] = [{**logger.state_dict(), "step": trainer.global_step} for logger in trainer.loggers]
    trainer._call("on_save_checkpoint", checkpoint=checkpoint)
    return checkpoint


def check_format(checkpoint: Any, path: Any) -> None:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise FulmenCheckpointError(
            f"{path} is not a fulmen Trainer checkpoint (it holds {keys}); to load bare weights "
            "use module.load_state_dict(torch.load(path, weights_only=True))"
        )
    version = checkpoint.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise FulmenCheckpointError(
            f"{path} uses checkpoint format {version}, newer than this fulmen understands "
            f"({FORMAT_VERSION}); upgrade fulmen (it was written by {checkpoint.get('fulmen_version')})"
        )


def restore_before_setup(trainer, checkpoint: Dict[str, Any]) -> None:
    """What must be back before callbacks set up: the loggers' versions, so that the
    default checkpoint directory (under the logger's folder) is the one of the first run."""
    for logger, state in zip(trainer.loggers, checkpoint.get("loggers", [])):
        logger.load_state_dict(state)


def restore(trainer, checkpoint: Dict[str, Any], path: Any, fitting: bool) -> None:
    trainer._call("on_load_checkpoint", checkpoint=checkpoint)
    trainer.strategy.load_module_state_dict(trainer.module, checkpoint["state_dict"])
    if not fitting:
        return
    if "loops" not in checkpoint:
        raise FulmenCheckpointError(
            f"{path} holds weights only (save_weights_only=True), so training cannot resume from "
            "it; load the weights with Module.load_from_checkpoint and start a new fit"
        )
    states = checkpoint.get("optimizer_states", [])
    if len(states) != len(trainer.optimizers):
        raise FulmenCheckpointError(
            f"{path} has {len(states)} optimizer state(s) but configure_optimizers returned "
            f"{len(trainer.optimizers)}; resume with the same optimizer setup"
        )
    for optimizer, state in zip(trainer.optimizers, states):
        trainer.strategy.load_optimizer_state_dict(optimizer.optimizer, state)
    schedulers = checkpoint.get("lr_schedulers", [])
    if len(schedulers) != len(trainer.lr_scheduler_configs):
        raise FulmenCheckpointError(
            f"{path} has {len(schedulers)} LR scheduler state(s) but configure_optimizers returned "
            f"{len(trainer.lr_scheduler_configs)}; resume with the same scheduler setup"
        )
    for config, state in zip(trainer.lr_scheduler_configs, schedulers):
        config.scheduler.load_state_dict(state)
    trainer.strategy.precision.load_state_dict(checkpoint.get("precision", {}))
    saved_callbacks = checkpoint.get("callbacks", {})
    for callback in trainer.callbacks:
        key = state_key(callback)
        if key in saved_callbacks and callable(getattr(callback, "load_state_dict", None)):
            callback.load_state_dict(saved_callbacks[key])
    if trainer.datamodule is not None and "datamodule" in checkpoint:
        loader = getattr(trainer.datamodule, "load_state_dict", None)
        if callable(loader):
            loader(checkpoint["datamodule"])
    if "train_dataloader" in checkpoint and trainer._train_loader is not None:
        trainer._train_loader.load_state_dict(checkpoint["train_dataloader"])
    trainer._progress.load_state_dict(checkpoint["loops"]["fit"])
    trainer.should_stop = bool(checkpoint["loops"]["fit"].get("should_stop", False))
    if "metrics" in checkpoint:
        trainer._metrics.load_state_dict(checkpoint["metrics"], trainer.module)
    if "metric_states" in checkpoint:
        metric_objects.restore_states(trainer.module, checkpoint["metric_states"], trainer.global_rank)
    # Random streams come back right before the next training batch is drawn (see fit_loop),
    # after the sanity check and iterator creation that would otherwise consume them.
    trainer._pending_rng = rng.for_rank(checkpoint.get("rng"), trainer.global_rank)


def _newest_first(paths) -> List[str]:
    # Directories too: a sharded checkpoint (fulmen-strategy-fsdp) is one directory.
    unique = {str(Path(p)) for p in paths if Path(p).exists()}
    return sorted(unique, key=lambda p: Path(p).stat().st_mtime, reverse=True)


def candidates(trainer, ckpt_path: Optional[str]) -> List[str]:
    """``"last"``, ``"best"`` or a path → the files to try, in order (empty: fresh start)."""
    if ckpt_path is None:
        return []
    if ckpt_path == "best":
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "best_model_path", ""):
                return [callback.best_model_path]
        raise FulmenConfigError(
            'ckpt_path="best" but no ModelCheckpoint has saved a best checkpoint yet; '
            "train first, or pass a file path"
        )
    if ckpt_path == "last":
        found = []
        for callback in trainer.checkpoint_callbacks:
            found.extend(callback.last_checkpoint_candidates())
        # The strategy knows what its checkpoints look like (a file, or a directory whose
        # own files are parts of it and never candidates themselves).
        found.extend(trainer.strategy.find_checkpoints(trainer.default_root_dir))
        ordered = _newest_first(found)
        if not ordered:
            warnings.warn('ckpt_path="last" found no checkpoint; starting from scratch', FulmenWarning, stacklevel=4)
        return ordered
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r} does not exist")
    return [str(ckpt_path)]


def load_first_good(trainer, ckpt_path: Optional[str]) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Read the checkpoint to resume from. For ``"last"`` a damaged newest file is skipped
    with a warning in favour of the newest good one; a path the user named must be good."""
    paths = candidates(trainer, ckpt_path)
    for index, path in enumerate(paths):
        try:
            checkpoint = trainer.strategy.load_checkpoint(path)
            check_format(checkpoint, path)
            return checkpoint, path
        except FulmenCheckpointError as exc:
            if ckpt_path != "last" or index == len(paths) - 1:
                raise
            warnings.warn(f"skipping damaged checkpoint {path}: {exc}; trying the next newest", FulmenWarning, stacklevel=3)
    return None, None
