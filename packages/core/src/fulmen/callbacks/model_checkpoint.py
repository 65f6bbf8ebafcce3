"""``ModelCheckpoint``: keep the best ``k`` checkpoints by a metric, and optionally the last.

Every file is written atomically (temporary file, fsync, rename) and old files are pruned
only after the new one is durable, so a crash during a save never leaves the run without
its last good checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError, FulmenUserCodeError
from fulmen.io.atomic import atomic_open, remove_stale_temp_files

_FIELD = re.compile(r"\{([^{}:!]+)(?:![rsa])?(?::[^{}]*)?\}")


class ModelCheckpoint(Callback):
    """Save checkpoints during fit: the best ``save_top_k`` by a monitored metric, or the
    latest, and optionally a ``last.ckpt`` beside them.

    The Trainer adds one (latest checkpoint, every epoch) unless ``enable_checkpointing=False``;
    pass your own to rank by a metric. By default it saves after each validation run during
    fit, or at the end of each training epoch when there is no validation. A file is only
    removed after its replacement is durable. ``fit(ckpt_path="last")`` and ``"best"`` find
    their files through it.

    Args:
        dirpath: The directory for the files; by default ``checkpoints/`` under the first
            logger's directory (or ``default_root_dir`` without loggers).
        filename: A template such as ``"{epoch}-{val_loss:.2f}"`` filled from the logged
            metrics plus ``epoch`` and ``step``; ``"{epoch}-{step}"`` by default.
        monitor: The logged metric that ranks checkpoints; ``None`` keeps the latest instead.
        verbose: Print a line for every save (and every checkpoint that did not make the top k).
        save_last: Also keep ``last.ckpt``, the state at the latest save.
        save_top_k: How many ranked files to keep; ``-1`` keeps all, ``0`` none (with
            ``save_last`` only ``last.ckpt``). Without ``monitor`` only ``1`` and ``-1`` apply.
        save_weights_only: Leave out what only a resume needs (optimizer, loop state); such a
            file can be loaded but not resumed from.
        mode: ``"min"`` when a lower ``monitor`` is better, ``"max"`` when higher is.
        auto_insert_metric_name: Write ``{epoch}`` as ``epoch=3`` rather than ``3``.
        every_n_train_steps: Save every N optimizer steps instead of at epoch ends.
        train_time_interval: Save whenever this much training time (a ``timedelta``) passed.
        every_n_epochs: Save every N epochs (the default trigger, with N = 1); the epoch in
            which training is told to stop is saved as well.
        save_on_train_epoch_end: ``True`` saves at the end of training epochs, ``False`` after
            validation; ``None`` chooses by whether validation runs.

    Only one of ``every_n_train_steps``, ``train_time_interval`` and ``every_n_epochs`` may be
    given."""

    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"

    def __init__(
        self,
        dirpath: Optional[str | os.PathLike] = None,
        filename: Optional[str] = None,
        monitor: Optional[str] = None,
        verbose: bool = False,
        save_last: Optional[bool] = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[timedelta] = None,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise FulmenConfigError(f"ModelCheckpoint(mode={mode!r}) must be 'min' or 'max'")
        if save_top_k < -1:
            raise FulmenConfigError(f"ModelCheckpoint(save_top_k={save_top_k}) must be >= -1")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise FulmenConfigError(
                f"ModelCheckpoint(save_top_k={save_top_k}) needs monitor= to rank checkpoints; "
                "without a metric only save_top_k=1 (latest) or -1 (all) make sense"
            )
        triggers = [x is not None for x in (every_n_train_steps, train_time_interval, every_n_epochs)]
        if sum(triggers) > 1:
            raise FulmenConfigError(
                "ModelCheckpoint takes one of every_n_train_steps, train_time_interval, every_n_epochs"
            )
        self.dirpath: Optional[str] = str(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self.every_n_train_steps = every_n_train_steps or 0
        self.train_time_interval = train_time_interval
        self.every_n_epochs = every_n_epochs if every_n_epochs is not None else (0 if sum(triggers) else 1)
        self.save_on_train_epoch_end = save_on_train_epoch_end
        self.best_k_models: Dict[str, float] = {}
        self.kth_best_model_path = ""
        self.best_model_path = ""
        self.best_model_score: Optional[torch.Tensor] = None
        self.last_model_path = ""
        self.current_score: Optional[torch.Tensor] = None
        self._last_global_step_saved = -1
        self._last_time_saved: Optional[float] = None
        self._last_written: Optional[tuple] = None

    @property
    def state_key(self) -> str:
        """One key per monitor, mode and trigger, so several ModelCheckpoint callbacks keep their
        rankings apart in a checkpoint."""
        return self._key_with(
            monitor=self.monitor, mode=self.mode, every_n_train_steps=self.every_n_train_steps,
            every_n_epochs=self.every_n_epochs, train_time_interval=self.train_time_interval,
        )

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, stage) -> None:
        """Choose the default directory once the loggers know theirs, and at the start of fit
        delete temporary files that saves killed mid-write left there."""
        if self.dirpath is None:
            base = trainer.log_dir if trainer.loggers else trainer.default_root_dir
            self.dirpath = str(Path(base) / "checkpoints")
        if stage == "fit" and trainer.is_global_zero:
            remove_stale_temp_files(self.dirpath)  # a resumed run after a kill mid-save

    def on_train_start(self, trainer) -> None:
        """Start the clock of ``train_time_interval``."""
        import time

        self._last_time_saved = time.monotonic()

    def on_train_batch_end(self, trainer) -> None:
        """Save here when ``every_n_train_steps`` or ``train_time_interval`` is due."""
        if not self.every_n_train_steps and self.train_time_interval is None:
            return  # saves at epoch ends or validations (the default): nothing to do per batch
        if self._skip(trainer):
            return
        due = False
        # Step 0 is before any optimizer step (with accumulate_grad_batches the first batches
        # end there): nothing trained yet, nothing worth a file.
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0:
            due = True
        if self.train_time_interval is not None:
            import time

            now = time.monotonic()
            if now - (self._last_time_saved or now) >= self.train_time_interval.total_seconds():
                due = True
                self._last_time_saved = now
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer) -> None:
        """Save at the end of a training epoch when saving there (see ``save_on_train_epoch_end``)."""
        if self._skip(trainer) or not self._epoch_due(trainer):
            return
        if self._on_train_epoch_end(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer) -> None:
        """Save after a validation run of fit, the default when the run validates."""
        if self._skip(trainer) or not self._epoch_due(trainer) or self._on_train_epoch_end(trainer):
            return
        self._save(trainer)

    def _on_train_epoch_end(self, trainer) -> bool:
        if self.save_on_train_epoch_end is not None:
            return self.save_on_train_epoch_end
        return not getattr(trainer, "_has_validation", False)

    def _epoch_due(self, trainer) -> bool:
        return bool(self.every_n_epochs) and (trainer.current_epoch + 1) % self.every_n_epochs == 0 or (
            bool(self.every_n_epochs) and trainer.should_stop
        )

    def _skip(self, trainer) -> bool:
        return (
            trainer.sanity_checking
            or trainer.state != "fitting"
            or bool(getattr(trainer, "fast_dev_run", 0))
            or self._last_global_step_saved == trainer.global_step
        )

    # ------------------------------------------------------------------ saving
    def _save(self, trainer) -> None:
        metrics = dict(trainer.callback_metrics)
        metrics.setdefault("epoch", torch.tensor(trainer.current_epoch))
        metrics.setdefault("step", torch.tensor(trainer.global_step))
        if trainer.world_size > 1:
            # Every rank must take the same decisions (top-k, file names): saving is
            # collective (the RNG gather, and all ranks write a sharded or DeepSpeed
            # checkpoint), so a metric logged without sync_dist, different on each rank,
            # deadlocked the ranks that decided differently. Rank zero's values decide, as
            # its file names always did.
            metrics = trainer.strategy.broadcast(_plain_scalars(metrics), src=0)
        self._last_global_step_saved = trainer.global_step
        if self.save_last:
            # Set before writing: every file written now holds it in its callback state.
            self.last_model_path = str(Path(self.dirpath) / (self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
        if self.save_top_k != 0:
            if self.monitor is None:
                self._save_latest(trainer, metrics)
            else:
                self._save_top_k(trainer, metrics)
        if self.save_last:
            self._save_last(trainer, metrics)

    def _monitored(self, trainer, metrics: Dict[str, Any]) -> torch.Tensor:
        if self.monitor not in metrics:
            available = sorted(k for k in trainer.callback_metrics)
            raise FulmenUserCodeError(
                f"ModelCheckpoint(monitor={self.monitor!r}) found no metric of that name. Logged "
                f"metrics: {available or 'none'}. Log it with self.log({self.monitor!r}, ...) "
                "(in validation_step for 'val_' metrics) or change monitor="
            )
        value = metrics[self.monitor]
        value = value.detach().float().cpu() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        if torch.isnan(value):
            value = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        return value

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _save_top_k(self, trainer, metrics: Dict[str, Any]) -> None:
        current = self._monitored(trainer, metrics)
        self.current_score = current
        score = float(current)
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if full and not self._better(score, self.best_k_models[self.kth_best_model_path]):
            if self.verbose:
                trainer.print(f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor} was not in top {self.save_top_k}")
            return
        path = self._unique_path(self._format_name(metrics), trainer)
        # Rank first, then write: the file's own callback state must already count it
        # (Lightning's order), or a resume from this file forgets it and exceeds top-k.
        self.best_k_models[path] = score
        removed = None
        if self.save_top_k != -1 and len(self.best_k_models) > self.save_top_k:
            removed = self._worst_path()
            del self.best_k_models[removed]
        ordered = sorted(self.best_k_models, key=self.best_k_models.get, reverse=self.mode == "max")
        self.best_model_path = ordered[0]
        self.best_model_score = torch.tensor(self.best_k_models[ordered[0]])
        self.kth_best_model_path = ordered[-1]
        self._write(trainer, path)
        if removed is not None and removed != path:
            self._remove(trainer, removed)  # only after the new file is durable
        if self.verbose:
            trainer.print(f"epoch {trainer.current_epoch}, step {trainer.global_step}: {self.monitor}={score:.5g}, saved {path}")

    def _worst_path(self) -> str:
        return sorted(self.best_k_models, key=self.best_k_models.get, reverse=self.mode == "max")[-1]

    def _save_latest(self, trainer, metrics: Dict[str, Any]) -> None:
        path = self._format_name(metrics)
        previous = self.best_model_path
        if (previous and previous == path) or self._exists(trainer, path):
            # Never overwrite a file this run did not write (e.g. an earlier run's): "-v1".
            path = self._unique_path(path, trainer)
        # Set before writing, because it is part of the state the file holds.
        if self.save_top_k == -1:
            self.best_k_models[path] = float(trainer.global_step)
        self.best_model_path = path
        self.kth_best_model_path = path
        self._write(trainer, path)
        if self.save_top_k == 1 and previous and previous != path:
            self._remove(trainer, previous)

    def _save_last(self, trainer, metrics: Dict[str, Any]) -> None:
        target = str(Path(self.dirpath) / (self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION))
        written = self._last_written
        source = written[0] if written and written[1] == trainer.global_step else ""
        if source and Path(source).is_file():  # a sharded checkpoint (a directory) is saved again
            # The same state was just written: copy the bytes instead of serialising again.
            if trainer.is_global_zero:
                with atomic_open(target) as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
            trainer.strategy.barrier("checkpoint.last")
        else:
            trainer.save_checkpoint(target, weights_only=self.save_weights_only)
        self.last_model_path = target

    def _write(self, trainer, path: str) -> None:
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        self._last_written = (path, trainer.global_step)
        # Trackers name uploads by these: "best" while this file is the best so far.
        aliases = ["latest", "best"] if path == self.best_model_path else ["latest"]
        for logger in (*trainer.loggers, *getattr(trainer, "log_listeners", ())):
            if trainer.is_global_zero:
                logger.log_checkpoint(path, aliases=aliases)

    def _remove(self, trainer, path: str) -> None:
        trainer.strategy.remove_checkpoint(path)

    # ------------------------------------------------------------------ names
    def _format_name(self, metrics: Dict[str, Any]) -> str:
        template = self.filename or "{epoch}-{step}"
        name = format_checkpoint_name(template, metrics, self.auto_insert_metric_name)
        return str(Path(self.dirpath) / (name + self.FILE_EXTENSION))

    @staticmethod
    def _exists(trainer, path: str) -> bool:
        # Rank zero's answer for all: another rank may look after rank zero wrote the file.
        return bool(trainer.strategy.broadcast(Path(path).exists()))

    def _unique_path(self, path: str, trainer) -> str:
        candidate, version = path, 1
        while candidate in self.best_k_models or self._exists(trainer, candidate):
            stem = path[: -len(self.FILE_EXTENSION)]
            candidate = f"{stem}-v{version}{self.FILE_EXTENSION}"
            version += 1
        return candidate

    def last_checkpoint_candidates(self) -> List[str]:
        """Checkpoints a ``ckpt_path="last"`` resume may use, newest first."""
        out = []
        if self.last_model_path and Path(self.last_model_path).exists():
            out.append(self.last_model_path)
        if self.dirpath and Path(self.dirpath).is_dir():
            files = sorted(Path(self.dirpath).glob("*" + self.FILE_EXTENSION), key=lambda p: p.stat().st_mtime, reverse=True)
            out.extend(str(p) for p in files if str(p) not in out)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """The ranking (best paths and scores, the k-th best, ``last.ckpt``) and the directory, so
        a resumed run keeps pruning the same files."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "dirpath": self.dirpath,
            "best_model_score": None if self.best_model_score is None else float(self.best_model_score),
            "best_model_path": self.best_model_path,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "last_model_path": self.last_model_path,
            "last_global_step_saved": self._last_global_step_saved,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the ranking, forgetting files that no longer exist; ignored when this callback
        now writes to a different directory, whose files the old ranking does not describe."""
        if state.get("dirpath") not in (None, self.dirpath) and self.dirpath is not None:
            # A different directory: the old ranking refers to files we do not manage.
            return
        self.dirpath = state.get("dirpath") or self.dirpath
        score = state.get("best_model_score")
        self.best_model_score = None if score is None else torch.tensor(score)
        self.best_model_path = state.get("best_model_path", "")
        self.best_k_models = {p: s for p, s in state.get("best_k_models", {}).items() if Path(p).exists()}
        self.kth_best_model_path = state.get("kth_best_model_path", "")
        self.last_model_path = state.get("last_model_path", "")
        self._last_global_step_saved = state.get("last_global_step_saved", -1)


def format_checkpoint_name(template: str, metrics: Dict[str, Any], auto_insert_metric_name: bool = True) -> str:
    """``"{epoch}-{val_loss:.2f}"`` → ``"epoch=3-val_loss=0.12"`` (missing metrics become 0)."""
    names = _FIELD.findall(template)
    values: Dict[str, Any] = {}
    text = template
    for index, name in enumerate(names):
        placeholder = f"__fulmen_{index}"
        value = metrics.get(name, 0)
        if isinstance(value, torch.Tensor):
            value = value.item()
        values[placeholder] = value
        pattern = "{" + name
        replacement = (f"{name}={{" if auto_insert_metric_name else "{") + placeholder
        text = text.replace(pattern, replacement, 1)
    return text.format(**values).replace("/", "_")


def _plain_scalars(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Scalar tensors as CPU tensors (cheap to pickle for a broadcast), the rest unchanged."""
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
