"""The base class of the loggers: the local run directory, the delivery thread, resume
state and rank-zero behaviour.

A subclass says where its run directory is (``_root_dir``), which settings identify its run
(``_settings``, stored in ``fulmen-delivery/meta.json`` so that ``fulmen loggers replay`` can
rebuild the client), and names the function that builds its :class:`~fulmen_loggers._sink.Sink`
from those settings (``SINK``). Everything that talks to the backend runs on the delivery
thread; the methods the Trainer calls only build records. Making hyperparameters plain is
:mod:`~fulmen_loggers._hyperparams`' job, keeping checkpoint files for their upload
:mod:`~fulmen_loggers._checkpoint_artifacts`'.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from fulmen.loggers.arguments import prefixed
from fulmen.loggers.base import Logger

from fulmen_loggers._checkpoint_artifacts import checkpoint_record, parse_log_model
from fulmen_loggers._delivery import Dispatcher
from fulmen_loggers._hyperparams import flatten_params, mapping_items, nested_params, params_digest
from fulmen_loggers._records import (
    ARTIFACT,
    DELIVERY_DIR,
    END,
    META_FILE,
    METRICS,
    PARAMS,
    SPOOL_FILE,
    FulmenLoggerWarning,
    read_json,
)
from fulmen_loggers._sink import DeliveryOptions, Sink, load_sink_factory
from fulmen_loggers._spool import Spool


def is_global_zero() -> bool:
    """Rank zero of an initialised process group, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class TrackingLogger(Logger):
    """Base of the MLflow, W&B, TensorBoard, ClearML and Comet loggers.

    ``delivery`` takes :class:`~fulmen_loggers._sink.DeliveryOptions`' arguments (queue size,
    batching, retry backoff, close timeout); its defaults are the only ones.
    """

    LABEL = "backend"
    BACKEND = "backend"
    SINK = ""  # "module:function" building the Sink from meta.json's settings
    WRITE_AHEAD = False  # journal every record before sending (backends that buffer in memory)

    def __init__(
        self,
        save_dir: Union[str, os.PathLike, None],
        log_model: Any = False,
        prefix: str = "",
        **delivery: Any,
    ) -> None:
        self._save_dir = Path(save_dir) if save_dir is not None else Path(".")
        self._log_model = parse_log_model(log_model)
        self._prefix = prefix
        self._options = DeliveryOptions(**delivery)  # its arguments and defaults, in one place
        self._dispatcher: Optional[Dispatcher] = None
        self._start_lock = threading.Lock()
        self._resume_step: Optional[int] = None
        self._restored_identity: Dict[str, Any] = {}
        self._params_digest: Optional[str] = None
        self._best_checkpoint: Optional[str] = None
        self._auto_step = 0
        self._metric_keys: Dict[str, None] = {}
        self._renamed: Dict[str, str] = {}
        self._last_remaining: Optional[int] = None

    # ------------------------------------------------------------------ identity
    @property
    def save_dir(self) -> str:
        """The local root given at construction (the Trainer passes ``default_root_dir``)."""
        return str(self._save_dir)

    def _root_dir(self) -> Path:
        raise NotImplementedError

    def _settings(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _next_version(self) -> int:
        root = self._root_dir()
        taken = []
        if root.is_dir():
            for entry in root.iterdir():
                suffix = entry.name[len("version_") :]
                if entry.is_dir() and entry.name.startswith("version_") and suffix.isdigit():
                    taken.append(int(suffix))
        return max(taken) + 1 if taken else 0

    @property
    def log_dir(self) -> str:
        """This run's directory, ``<root>/version_N`` (or the version's own folder name): the
        delivery directory lives in it and, for the Trainer's first logger, the checkpoints."""
        version = self.version
        folder = version if isinstance(version, str) else f"version_{version}"
        return str(self._root_dir() / folder)

    @property
    def delivery_dir(self) -> Path:
        """Where the spool, its acknowledgement and ``meta.json`` live."""
        return Path(self.log_dir) / DELIVERY_DIR

    @property
    def spool_path(self) -> Path:
        """This run's spool file, whether or not anything was spooled yet."""
        return self.delivery_dir / SPOOL_FILE

    @property
    def identity(self) -> Dict[str, Any]:
        """What identifies the backend run once the delivery thread created it (e.g. run id)."""
        if self._dispatcher is not None and self._dispatcher.identity:
            return dict(self._dispatcher.identity)
        meta = read_json(self.delivery_dir / META_FILE, {}) if self._version_known() else {}
        return {**self._restored_identity, **(meta.get("identity") or {})}

    def _version_known(self) -> bool:
        return True

    # ------------------------------------------------------------------ delivery
    def _start(self) -> Dispatcher:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            return dispatcher
        with self._start_lock:
            if self._dispatcher is None:
                settings = {
                    "backend": self.BACKEND,
                    "label": self.LABEL,
                    "sink": self.SINK,
                    "write_ahead": self.WRITE_AHEAD,
                    "settings": self._settings(),
                }
                if self._restored_identity:
                    settings["restored_identity"] = dict(self._restored_identity)
                dispatcher = Dispatcher(
                    self._sink_factory(),
                    self.delivery_dir,
                    self.LABEL,
                    self._options,
                    settings,
                    self._resume_step,
                )
                dispatcher.at_exit = self._finalize_at_exit
                dispatcher.start()
                self._resume_step = None  # applied once, by this generation
                self._dispatcher = dispatcher
        return self._dispatcher

    def _sink_factory(self) -> Callable[[Dict[str, Any]], Sink]:
        """What builds this run's sink from ``meta.json``'s settings: ``SINK`` by default. A
        logger overrides it to hand the sink what must never be written to disk (an API key);
        ``fulmen loggers replay`` builds from ``SINK`` alone."""
        return load_sink_factory(self.SINK)

    @property
    def dispatcher(self) -> Optional[Dispatcher]:
        """The live delivery thread's owner, if this logger has sent anything yet."""
        return self._dispatcher

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record logged so far is delivered or spooled (tests, notebooks)."""
        return True if self._dispatcher is None else self._dispatcher.flush(timeout)

    def wait_delivered(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record logged so far has reached the backend."""
        return True if self._dispatcher is None else self._dispatcher.wait_delivered(timeout)

    @property
    def spooled(self) -> int:
        """Records waiting in the spool file (reads it)."""
        return Spool(self.delivery_dir).pending_count() if self.spool_path.exists() else 0

    # ------------------------------------------------------------------ the Logger contract
    def _metric_name(self, name: str) -> str:
        return name

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        """Queue ``metrics`` at ``step`` for the delivery thread (rank zero only); never waits.

        Without a step, steps count on from the last one. A name gets the prefix and the backend's
        renaming once, on first use; a value that is not a number is skipped with a warning."""
        if not metrics or not is_global_zero():
            return
        if step is None:
            step = self._auto_step
            self._auto_step += 1
        else:
            self._auto_step = max(self._auto_step, int(step) + 1)
        data = {}
        for key, value in metrics.items():
            name = self._renamed.get(key)
            if name is None:
                name = self._metric_name(prefixed(self._prefix, key))
                self._renamed[key] = name
                self._metric_keys[name] = None
            try:
                data[name] = float(value)
            except (TypeError, ValueError):
                warnings.warn(
                    f"{self.LABEL}: metric {key!r} is not a number ({value!r}); skipped",
                    FulmenLoggerWarning,
                    stacklevel=2,
                )
        if data:
            self._start().submit(METRICS, data, int(step))

    def log_hyperparams(self, params: Any) -> None:
        """Queue the hyperparameters, flat and nested (see :mod:`~fulmen_loggers._hyperparams`),
        once: the same values again, or after a resume whose run already has them, send nothing."""
        if not is_global_zero():
            return
        items = mapping_items(params)
        params = dict(items) if items is not None else {"params": params}
        flat = flatten_params(params)
        digest = params_digest(flat)
        if digest == self._params_digest:
            return  # logged once; a resumed run does not send them again
        self._params_digest = digest
        self._start().submit(PARAMS, {"flat": flat, "nested": nested_params(params)})

    def log_checkpoint(self, path: str, aliases: Optional[List[str]] = None) -> None:
        """ModelCheckpoint wrote ``path``. ``log_model='all'`` uploads every file (aliases
        ``latest`` and, for the best so far, ``best``); ``'best'`` uploads the best file once,
        when training ends; ``False`` uploads nothing."""
        if self._log_model == "off" or not is_global_zero():
            return
        if self._log_model == "best":
            if aliases is None or "best" in aliases:  # callers that give no aliases: the latest is the best
                self._best_checkpoint = str(path)
            return
        aliases = list(aliases) if aliases else ["latest"]
        self._submit_checkpoint(str(path), aliases)

    def _submit_checkpoint(self, path: str, aliases: List[str]) -> None:
        dispatcher = self._start()
        dispatcher.submit(ARTIFACT, checkpoint_record(path, aliases, dispatcher.directory))

    def save(self) -> None:
        """Called before each checkpoint and at epoch ends: what is still in memory goes to
        the spool, so no checkpoint exists whose earlier metrics could be lost with the process."""
        if self._dispatcher is not None:
            self._dispatcher.persist()

    def finalize(self, status: str) -> None:
        """Send what is left (the best checkpoint in ``log_model='best'`` mode, the run's end),
        waiting at most ``close_timeout`` seconds; then say how many records stay spooled."""
        if not is_global_zero():
            return
        if self._log_model == "best" and self._best_checkpoint:
            path = self._best_checkpoint
            if os.path.exists(path):
                self._submit_checkpoint(path, ["best"])
            else:
                warnings.warn(
                    f"{self.LABEL}: the best checkpoint {path} no longer exists; not uploaded",
                    FulmenLoggerWarning,
                    stacklevel=2,
                )
        if self._dispatcher is None and not self._metric_keys and self._params_digest is None:
            return  # nothing was ever logged: do not create a run just to end it
        dispatcher = self._start()
        dispatcher.submit(END, {"status": status, "metric_keys": list(self._metric_keys)})
        self._last_remaining = dispatcher.close()
        self._dispatcher = None  # logging again (trainer.test() after fit) continues the same run

    def _finalize_at_exit(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        dispatcher.submit(END, {"status": "success", "metric_keys": list(self._metric_keys)})
        self._last_remaining = dispatcher.close()
        self._dispatcher = None

    @property
    def remaining(self) -> Optional[int]:
        """Records still spooled when the logger was last finalized (None before that)."""
        return self._last_remaining

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Nothing to draw for most backends (TensorBoard overrides this)."""
        pass

    # ------------------------------------------------------------------ resume / ranks
    def state_dict(self) -> Dict[str, Any]:
        """What a checkpoint keeps so that resuming continues this backend run: the local
        version, the run's identity, the hyperparameters' digest and the best checkpoint so far."""
        return {
            "version": self.version,
            "identity": self.identity,
            "params": self._params_digest,
            "best_checkpoint": self._best_checkpoint,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the checkpoint's run: same local version (so the same spool and run id),
        metrics after ``state['step']`` that the dead process spooled are dropped, and values
        the backend already holds are not sent twice."""
        if state.get("version") is not None:
            self._set_version(state["version"])
        self._restored_identity = dict(state.get("identity") or {})
        self._params_digest = state.get("params") or self._params_digest
        self._best_checkpoint = state.get("best_checkpoint") or self._best_checkpoint
        if state.get("step") is not None:
            self._resume_step = int(state["step"])
            self._auto_step = self._resume_step + 1

    def _set_version(self, version: Any) -> None:
        self._version = version

    def synchronize(self, strategy: Any) -> None:
        """Give every rank rank zero's version (and a subclass's extra identity), collectively:
        all ranks must name the same run directory, though only rank zero writes to it."""
        payload = (self.version, self._sync_extra()) if strategy.is_global_zero else None
        version, extra = strategy.broadcast(payload)
        self._set_version(version)
        self._apply_sync_extra(extra)

    def _sync_extra(self) -> Any:
        return None

    def _apply_sync_extra(self, extra: Any) -> None:
        pass

    def __getstate__(self) -> Dict[str, Any]:
        # Spawned ranks get a copy without the delivery thread (only rank zero ever starts one).
        state = dict(self.__dict__)
        state["_dispatcher"] = None
        state["_start_lock"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_lock = threading.Lock()


__all__ = ["TrackingLogger", "is_global_zero"]
