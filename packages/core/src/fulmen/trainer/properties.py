"""The Trainer's public, read-only view of a run: what callbacks and loggers may read.

Built-in callbacks use only these (and the Trainer's public methods), which is how we
know a third-party callback can do whatever a built-in one does.
"""

from __future__ import annotations

from typing import Any, Dict, List, Union

import torch

from fulmen.trainer import fit_loop
from fulmen.trainer.states import TrainerState


class TrainerProperties:
    """Mixed into ``fulmen.Trainer``; reads the state the loops keep."""

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (what loggers receive as ``step``)."""
        return self._progress.global_step

    @property
    def current_epoch(self) -> int:
        """The epoch being trained, counted from 0."""
        return self._progress.current_epoch

    @property
    def callback_metrics(self) -> Dict[str, torch.Tensor]:
        """The latest value of every logged metric, as tensors: what ``ModelCheckpoint(monitor=)`` and ``EarlyStopping`` read."""
        return self._metrics.callback_metrics

    @property
    def logged_metrics(self) -> Dict[str, float]:
        """The metrics last sent to the loggers, as floats."""
        return self._metrics.logged_metrics

    @property
    def progress_bar_metrics(self) -> Dict[str, float]:
        """The metrics logged with ``prog_bar=True``, as floats."""
        return self._metrics.progress_bar_metrics

    @property
    def logger(self):
        """The first logger, or ``None`` without loggers."""
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        """The first logger's directory, or ``default_root_dir`` without one."""
        logger = self.logger
        log_dir = getattr(logger, "log_dir", None) if logger is not None else None
        return str(log_dir) if log_dir is not None else self.default_root_dir

    @property
    def checkpoint_callbacks(self) -> List[Any]:
        """Every ``ModelCheckpoint`` among the callbacks."""
        from fulmen.callbacks.model_checkpoint import ModelCheckpoint

        return [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]

    @property
    def checkpoint_callback(self):
        """The first ``ModelCheckpoint``, or ``None``."""
        callbacks = self.checkpoint_callbacks
        return callbacks[0] if callbacks else None

    @property
    def early_stopping_callback(self):
        """The first ``EarlyStopping`` callback, or ``None``."""
        from fulmen.callbacks.early_stopping import EarlyStopping

        return next((cb for cb in self.callbacks if isinstance(cb, EarlyStopping)), None)

    @property
    def progress_bar_callback(self):
        """The progress bar callback, or ``None`` when disabled."""
        from fulmen.callbacks.progress_bar import ProgressBar

        return next((cb for cb in self.callbacks if isinstance(cb, ProgressBar)), None)

    @property
    def accelerator(self):
        """The strategy's accelerator object."""
        return self.strategy.accelerator

    @property
    def precision(self) -> str:
        """The precision's name, e.g. ``"bf16-mixed"``."""
        return self.strategy.precision.name

    @property
    def world_size(self) -> int:
        """How many processes train together."""
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        """This process's index in the job."""
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        """This process's index on its node."""
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        """This process's node index."""
        return self.strategy.node_rank

    @property
    def is_global_zero(self) -> bool:
        """True in the one process that writes files and talks to loggers."""
        return self.strategy.is_global_zero

    @property
    def lightning_module(self):
        """The module being run (Lightning's name; ``trainer.model`` is the same)."""
        return self.module

    model = lightning_module

    @property
    def ckpt_path(self):
        """The checkpoint the last fit/validate/test/predict loaded, with ``"best"``/``"last"``
        resolved to the file (Lightning's name); None when that stage started fresh."""
        return self._loaded_ckpt_path

    @property
    def training(self) -> bool:
        """True while fit trains (False in its validation and the sanity check)."""
        # Lightning: False while fit's validation loop runs (trainer.validating is True then).
        return self.state == "fitting" and not self.sanity_checking and not self._evaluating

    @property
    def validating(self) -> bool:
        """True while a validation loop runs (inside fit or ``validate``)."""
        return self._evaluating and self.state in ("fitting", "validating") and not self.sanity_checking

    @property
    def testing(self) -> bool:
        """True while ``test`` runs."""
        return self.state == "testing"

    @property
    def predicting(self) -> bool:
        """True while ``predict`` runs."""
        return self.state == "predicting"

    @property
    def state(self) -> TrainerState:
        """Where the Trainer is, as one word that compares as a string (``"initializing"``,
        ``"fitting"``, ``"validating"``, ``"testing"``, ``"predicting"``, ``"finished"``,
        ``"interrupted"``, ``"failed"``), with Lightning's ``.fn``, ``.stage``, ``.status`` and
        ``.finished`` (see ``fulmen.trainer.states``)."""
        return self._state

    @state.setter
    def state(self, name: str) -> None:
        self._state = TrainerState(name, self)

    @property
    def interrupted(self) -> bool:
        """True when the last run was stopped by Ctrl-C, a signal or an exception."""
        return self.state in ("interrupted", "failed")

    @property
    def num_nodes(self) -> int:
        """How many machines take part."""
        return self.strategy.num_nodes

    @property
    def device_ids(self) -> List[int]:
        """The index of each device this node trains on (for CPU processes: 0, 1, ...)."""
        devices = self.strategy.parallel_devices or [self.strategy.root_device]
        return [d.index if isinstance(d, torch.device) and d.index is not None else i for i, d in enumerate(devices)]

    @property
    def num_devices(self) -> int:
        """How many devices this node trains on (``len(trainer.device_ids)``)."""
        return len(self.device_ids)

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the whole fit will take (``inf`` when unbounded); for schedulers such as OneCycleLR."""
        return fit_loop.estimated_stepping_batches(self)

    @property
    def train_dataloader(self):
        """The training dataloader of the current or last fit, as given (batches not yet on the
        device: ``strategy.batch_to_device`` moves them); None before any fit. Lightning's name."""
        loader = self._train_loader
        return getattr(loader, "dataloader", loader)

    @property
    def fit_progress(self):
        """Where fit is: a ``fulmen.trainer.checkpoint.Progress`` record (epoch, global step,
        batches of this epoch consumed, batches across epochs). Read it; do not change it."""
        return self._progress

    @property
    def num_test_batches(self) -> List[Union[int, float]]:
        """Batches per test dataloader of the running ``test`` (``inf``: no length)."""
        return list(self._eval_batch_counts) if self.state == "testing" else []

    @property
    def num_predict_batches(self) -> List[Union[int, float]]:
        """Batches per predict dataloader of the running ``predict`` (``inf``: no length)."""
        return list(self._eval_batch_counts) if self.state == "predicting" else []
