"""``RayTrainReportCallback``: fulmen's checkpoints and logged rows handed to ``ray.train.report``.

A Ray report is the commit point of a Ray Train job: after a failure Ray restarts the worker
group from the latest *reported* checkpoint. So each report carries one checkpoint that
fulmen's ``ModelCheckpoint`` wrote, at its own cadence, together with exactly the rows
fulmen's loggers received up to that checkpoint. Rows logged after it are reported with the
next checkpoint; a worker that dies first takes them with it, and the resumed run logs them
again, as the CSV logger drops them from its file on resume. That is what makes every row
reach Ray once, before and after a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError
from fulmen.loggers.base import Logger

#: The file name of the fulmen checkpoint inside each checkpoint directory reported to Ray.
CHECKPOINT_FILE = "fulmen.ckpt"
#: The metrics key that carries every row logged since the previous report, in order.
ROWS_KEY = "fulmen_rows"


class _RowTap(Logger):
    """The callback's ear on the Trainer's logging: a log tap (``Trainer.log_listeners``), which
    gets what the loggers get without being one of them, keeping the rows (global rank zero
    only receives any) until the callback reports them, and the paths of the files
    ``ModelCheckpoint`` announces."""

    def __init__(self, owner: "RayTrainReportCallback") -> None:
        self._owner = owner

    @property
    def name(self) -> str:
        return "ray_train_report"

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        self._owner._pending.append({**metrics, "step": step})

    def log_checkpoint(self, path: str, aliases: Optional[list] = None) -> None:
        if self._owner._due is not None:  # a full checkpoint was built for it, not weights only
            self._owner._announced = path


class RayTrainReportCallback(Callback):
    """Report each checkpoint ``ModelCheckpoint`` writes to Ray Train, with the rows logged up
    to it, so that Ray restarts a failed worker group from fulmen's own checkpoints.

    Use it inside a Ray Train training function, with a ``ModelCheckpoint`` that keeps files
    (its cadence is the reporting cadence: ``every_n_train_steps`` reports mid-epoch), and
    resume with ``trainer.fit(..., ckpt_path=fulmen_ray.resume_checkpoint())``.

    Each ``ray.train.report`` call has the latest value of every logged metric at the top
    level (for Ray's ``CheckpointConfig(checkpoint_score_attribute=...)``), ``step`` and
    ``epoch``, and under ``"fulmen_rows"`` the rows themselves, each logged row once. Rows
    logged after the last checkpoint of a run are reported, without a checkpoint, when fit
    ends. Ray's report is a barrier of all workers; this callback calls it on every rank at
    the same points (one broadcast from rank zero agrees on what is reported), and does
    nothing per step between checkpoints."""

    def __init__(self) -> None:
        self._pending: List[Dict[str, Any]] = []
        self._announced: Optional[str] = None
        self._due: Optional[int] = None  # rows covered by the checkpoint being written
        self._tap = _RowTap(self)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, stage) -> None:
        """Attach the row tap to the Trainer's logging, beside its loggers rather than among
        them: ``trainer.logger``, ``loggers`` and ``log_dir`` stay the user's, also with
        ``logger=False``."""
        if stage == "fit":
            _refuse_own_checkpoint_format(trainer.strategy)
        if stage == "fit" and not any(tap is self._tap for tap in trainer.log_listeners):
            trainer.log_listeners.append(self._tap)

    def on_save_checkpoint(self, trainer, checkpoint) -> None:
        """A full checkpoint is being built: it covers the rows logged so far."""
        if "loops" in checkpoint:  # weights-only files cannot be resumed from: not reported
            self._due = len(self._pending)

    def on_train_batch_start(self, trainer) -> None:
        """Report the checkpoint written at the end of the previous batch: the first hook after
        ModelCheckpoint's save there, whatever order the callbacks run in."""
        if self._due is not None:  # the only per-step cost: one comparison
            self._report(trainer, final=False)

    def on_train_epoch_start(self, trainer) -> None:
        """Report the checkpoint written at the end of the previous epoch or its validation."""
        if self._due is not None:
            self._report(trainer, final=False)

    def on_fit_end(self, trainer) -> None:
        """Report what is still pending: the last checkpoint and the rows after it."""
        self._report(trainer, final=True)

    def teardown(self, trainer, stage) -> None:
        """Detach the row tap again: a later stage logs without it."""
        if stage == "fit" and any(tap is self._tap for tap in trainer.log_listeners):
            trainer.log_listeners.remove(self._tap)

    # ------------------------------------------------------------------ reporting
    def _report(self, trainer, final: bool) -> None:
        import ray.train

        due, announced = self._due, self._announced
        self._due, self._announced = None, None
        count = len(self._pending) if final else (due if announced else None)
        if trainer.world_size > 1:
            # Only rank zero receives rows and file names; every rank must make the same
            # number of report calls, so its decision is the one all follow.
            count, announced = trainer.strategy.broadcast((count, announced), src=0)
        if count is None:  # a checkpoint nobody announced (a manual save_checkpoint): wait
            return
        if final and not count and not announced:
            return
        rows, self._pending = self._pending[:count], self._pending[count:]
        metrics = _summary(rows, trainer)
        if not trainer.is_global_zero or not announced:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="fulmen-ray-") as folder:
            _place(announced, os.path.join(folder, CHECKPOINT_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _summary(rows: List[Dict[str, Any]], trainer) -> Dict[str, Any]:
    latest: Dict[str, Any] = {}
    for row in rows:
        latest.update(row)
    latest.setdefault("step", trainer.global_step)
    latest.setdefault("epoch", float(trainer.current_epoch))
    latest[ROWS_KEY] = rows
    return latest


_SUPPORTED = ('strategy="ray" (DDP over the worker group), or a single worker\'s default strategy, '
              "with a checkpoint_io that writes one file per checkpoint")


def _refuse_own_checkpoint_format(strategy) -> None:
    """Before the first step, not at the first checkpoint: a strategy with its own checkpoint
    format (FSDP's and DeepSpeed's sharded directories) is not handed to Ray yet."""
    from fulmen.strategies.base import Strategy

    if type(strategy).save_checkpoint is not Strategy.save_checkpoint:
        raise FulmenConfigError(
            f"RayTrainReportCallback hands single-file checkpoints to Ray, and strategy "
            f"{type(strategy).__name__} writes checkpoints in its own format (sharded strategies "
            f"such as fsdp and deepspeed write directories), which fulmen-ray does not support "
            f"yet: use {_SUPPORTED}."
        )


def _place(source: str, target: str) -> None:
    """The checkpoint file in the folder Ray uploads: a hard link where possible (the file
    is never written again; ModelCheckpoint writes new files and renames atomically)."""
    if os.path.isdir(source):  # a checkpoint_io that writes directories
        raise FulmenConfigError(
            f"RayTrainReportCallback hands single-file checkpoints to Ray, and {source} is a "
            f"checkpoint directory, which fulmen-ray does not support yet: use {_SUPPORTED}."
        )
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
