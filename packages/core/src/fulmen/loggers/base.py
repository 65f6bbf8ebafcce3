"""The logger contract: what the Trainer hands an experiment tracker, and when.

``log_metrics`` receives floats at logging intervals only (never per step tensors), on
global rank zero only. ``save`` is called at epoch ends; ``finalize`` once at the end with
``"success"``, ``"failed"`` or ``"interrupted"``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class Logger:
    """Base class of loggers: subclass it to send the Trainer's metrics to an experiment tracker,
    and register the class with ``register_loggers``.

    Only :meth:`log_metrics` is required; the rest has no-op defaults. The calls that record
    something (``log_metrics``, ``log_hyperparams``, ``log_graph``, ``log_checkpoint``,
    ``finalize``) happen on global rank zero only; ``save``, ``state_dict``,
    ``load_state_dict`` and ``synchronize`` on every rank. The full contract (what ``step``
    means, the ``epoch`` key, when each method runs) is in ``docs/plugins.md``, "The logger
    contract"; ``fulmen.testing.LoggerConformance`` checks an implementation against it."""

    @property
    def name(self) -> str:
        """The experiment (or project) name runs are grouped under; the class name by default."""
        return type(self).__name__

    @property
    def version(self) -> Any:
        """This run's identifier within :attr:`name` (a number, a run id), or ``None`` where the
        tracker assigns none. A resumed run gets it back through :meth:`load_state_dict`."""
        return None

    @property
    def log_dir(self) -> Optional[str]:
        """A local directory this run writes to, or ``None``. The Trainer's ``log_dir`` is the first
        logger's, and ``ModelCheckpoint`` saves under it by default."""
        return None

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        """Record one row of ``metrics`` (name to float) at ``step``.

        The Trainer calls it at logging intervals and epoch ends with ``step`` set to
        ``trainer.global_step`` (optimizer steps taken so far, so several rows may share a step)
        and an ``epoch`` entry in ``metrics``. The values are Python floats already read from the
        device; a logger that is slow to deliver them should queue, not block."""
        raise NotImplementedError

    def log_hyperparams(self, params: Dict[str, Any]) -> None:
        """Record the run's hyperparameters once, at the start of fit: the module's
        ``save_hyperparameters()`` dict merged with the datamodule's (values may be nested)."""
        pass

    def log_checkpoint(self, path: str, aliases: Optional[list] = None) -> None:
        """A checkpoint file was written; trackers with artifact stores may upload it.
        ``aliases`` (from ModelCheckpoint): ``["latest"]``, plus ``"best"`` while the file
        is the best so far."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Once at the start of fit, on global rank zero: trackers that draw the model may
        trace it (``input_array`` defaults to ``model.example_input_array``)."""

    def save(self) -> None:
        """Make what was logged so far durable (flush buffers). Called at every epoch end, before a
        checkpoint is written (so the files match it) and at the end of fit; it may be called
        again after :meth:`finalize`."""
        pass

    def finalize(self, status: str) -> None:
        """The run is over: flush and close. ``status`` is ``"success"`` after fit ends normally,
        ``"failed"`` when a stage raised, ``"interrupted"`` on ``KeyboardInterrupt`` or a preemption
        exit. It must not raise (a failure is turned into a warning so the original error stays
        visible); the default calls :meth:`save`."""
        self.save()

    def synchronize(self, strategy: Any) -> None:
        """Make every rank agree on run identity (version, run id) before anything uses it;
        called once per run on every rank, collectively."""

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs to continue this run (its version or run id, rows written), as
        plain data; saved in every full Trainer checkpoint."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the run that :meth:`state_dict` described; called when fit resumes from a
        checkpoint, before callbacks set up (so directories derived from :attr:`log_dir` match).
        ``state`` also carries the ``"step"`` the checkpoint was taken at."""
        pass
