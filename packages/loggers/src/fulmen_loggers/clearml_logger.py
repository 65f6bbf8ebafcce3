"""``ClearMLLogger``: scalars, hyperparameters and checkpoints to a ClearML task (a server,
or offline to ClearML's cache), with ``clearml`` driven from the logger's delivery thread only.

ClearML's reporter keeps scalars in memory and writes them out every few seconds from a
background thread or subprocess (to the server, or to the offline session's
``metrics.jsonl``), so a killed process loses its last seconds; hence the write-ahead
journal, as for W&B. ``Task.init`` (which contacts the server and inspects the repository)
never runs on the training thread. A resumed fit continues the same task
(``continue_last_task=<id>``, from the checkpoint), with ClearML's own iteration offset
turned off so that steps stay the Trainer's global steps.

ClearML keeps one main task per process: use one ``ClearMLLogger`` at a time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from fulmen.loggers.arguments import resolve_save_dir

from fulmen_loggers._checkpoint_artifacts import MissingArtifact, artifact_source, release_staged
from fulmen_loggers._records import ARTIFACT, END, METRICS, PARAMS, Record
from fulmen_loggers._sink import Sink
from fulmen_loggers._tracking_logger import TrackingLogger


def split_name(name: str) -> Tuple[str, str]:
    """A metric name as ClearML's (title, series): ``"train/loss"`` → ``("train", "loss")``, so that
    ClearML's UI groups a folder's series in one plot; a name without ``/`` is both."""
    title, sep, series = name.rpartition("/")
    return (title, series) if sep and title and series else (name, name)


def join_name(title: str, series: str) -> str:
    """The inverse of :func:`split_name`: the metric name fulmen logged."""
    return title if title == series else f"{title}/{series}"


class ClearMLLogger(TrackingLogger):
    """Log to ClearML.

    Args:
        project_name: default ``$CLEARML_PROJECT``, else ``"fulmen_logs"``.
        task_name: default ``$CLEARML_TASK``, else ``"fulmen"``.
        task_id: continue this existing task (a checkpoint's task is continued by itself).
        tags: tags of the task.
        offline: write the task to ClearML's offline session folder (under ``$CLEARML_CACHE_DIR``,
            ``~/.clearml/cache`` by default) instead of a server; ``$CLEARML_OFFLINE_MODE=1`` does
            the same. Import it into a server later with ``Task.import_offline_session(zip)``.
        save_dir: local root (``Trainer`` passes ``default_root_dir``); the run directory
            ``<save_dir>/clearml/<project>/version_N`` holds the spool and, when this is the
            Trainer's first logger, the checkpoints.
        root_dir: the same folder under Lightning Fabric's name for it; pass one of them.
        log_model: ``False``, ``True``/``"best"`` (best checkpoint at the end) or ``"all"``; files
            become task artifacts named after the file, their aliases in the artifact's metadata.
        prefix: put before every metric name.
        hyperparams_section: the task's parameter section for ``log_hyperparams`` (``"General"``,
            where ``Task.connect`` puts a dict).
        init_kwargs: more ``Task.init`` arguments. fulmen turns ClearML's automatic framework,
            argument parser, console and resource logging off (fulmen logs itself); set them here.
        queue_size, max_batch, flush_interval, retry_initial, retry_max, close_timeout:
            delivery settings, as for :class:`~fulmen_loggers.MLflowLogger`.
    """

    LABEL = "ClearML"
    BACKEND = "clearml"
    SINK = "fulmen_loggers.clearml_logger:build_sink"
    WRITE_AHEAD = True  # ClearML's reporter holds scalars in memory for seconds (module docstring)

    def __init__(
        self,
        project_name: Optional[str] = None,
        task_name: Optional[str] = None,
        task_id: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        offline: bool = False,
        save_dir: Union[str, os.PathLike, None] = None,
        log_model: Any = False,
        prefix: str = "",
        hyperparams_section: str = "General",
        init_kwargs: Optional[Dict[str, Any]] = None,
        *,
        root_dir: Union[str, os.PathLike, None] = None,
        **delivery: Any,
    ) -> None:
        save_dir = resolve_save_dir(type(self).__name__, save_dir, root_dir)
        super().__init__(save_dir, log_model=log_model, prefix=prefix, **delivery)
        env = os.environ
        self._project = project_name or env.get("CLEARML_PROJECT") or "fulmen_logs"
        self._task_name = task_name or env.get("CLEARML_TASK") or "fulmen"
        self._task_id_arg = task_id
        self._tags = list(tags) if tags is not None else None
        self._offline = bool(offline)
        self._section = hyperparams_section
        self._init_kwargs = dict(init_kwargs or {})
        self._version: Any = task_id  # a given task always maps to the same folder

    @property
    def name(self) -> str:
        """The ClearML project (the folder the run directories sit in)."""
        return self._project

    @property
    def version(self) -> Any:
        """The local run folder's name: the given task id, else the next free ``version_N``."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    @property
    def task_id(self) -> Optional[str]:
        """The ClearML task id, once the delivery thread created or continued the task."""
        return self.identity.get("task_id")

    def _root_dir(self) -> Path:
        return self._save_dir / "clearml" / (re.sub(r"[^\w.\-]+", "_", self._project).strip("._") or "project")

    def _settings(self) -> Dict[str, Any]:
        return {
            "project_name": self._project,
            "task_name": self._task_name,
            "task_id": self._task_id_arg,
            "tags": self._tags,
            "offline": self._offline,
            "section": self._section,
            "init_kwargs": self._init_kwargs,
        }


# Task.init arguments fulmen sets unless init_kwargs says otherwise: fulmen does the logging,
# so ClearML's patching of torch.save, argparse, stdout and its resource monitor stay off.
INIT_DEFAULTS = {
    "auto_connect_frameworks": False,
    "auto_connect_arg_parser": False,
    "auto_connect_streams": False,
    "auto_resource_monitoring": False,
    "reuse_last_task_id": False,
}


def _env_offline() -> bool:
    return os.environ.get("CLEARML_OFFLINE_MODE", "").strip().lower() in ("1", "true", "yes", "on")


class ClearMLSink(Sink):
    """Drives one ClearML task from the delivery thread: ``Task.init``, ``report_scalar``,
    ``connect``, ``upload_artifact`` and ``close``."""

    label = "ClearML"
    batch_limit = 1000  # each metrics or parameters record is a local call into the client's queue

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.settings = dict(meta.get("settings") or {})
        identity = dict(meta.get("identity") or {})
        restored = dict(meta.get("restored_identity") or {})
        self.task_id: Optional[str] = identity.get("task_id") or restored.get("task_id") or self.settings.get("task_id")
        self.task = None
        self.offline_folder: Optional[str] = identity.get("offline_folder") or restored.get("offline_folder")

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """Create the task, or continue the known one (a resumed fit, the replay command)."""
        from clearml import Task

        s = self.settings
        if s.get("offline") or _env_offline():
            Task.set_offline(True)  # ClearML reads $CLEARML_OFFLINE_MODE once, when it is imported
        kwargs = dict(INIT_DEFAULTS)
        kwargs.update(s.get("init_kwargs") or {})
        kwargs.update(project_name=s.get("project_name"), task_name=s.get("task_name"))
        if s.get("tags"):
            kwargs["tags"] = list(s["tags"])
        if self.task_id:
            kwargs["continue_last_task"] = self.task_id
        self.task = Task.init(**kwargs)
        if self.task_id:
            # ClearML offsets a continued task's iterations past its last one; fulmen's steps are
            # the Trainer's global steps, which a checkpoint already continues.
            self.task.set_initial_iteration(0)
        self.task_id = self.task.id
        identity: Dict[str, Any] = {"task_id": self.task_id}
        if Task.is_offline():
            self.offline_folder = str(self.task.get_offline_mode_folder())
            identity["offline_folder"] = self.offline_folder
        return identity

    def send(self, chunk: List[Record]) -> None:
        """Scalars at their step, parameters into the task's section, checkpoints as artifacts,
        and at the end the task's status and ``close`` (which writes everything out)."""
        if self.task is None:
            raise RuntimeError("the ClearML task is closed; reopen it")
        for record in chunk:
            if record.kind == METRICS:
                logger = self.task.get_logger()
                for name, value in record.data.items():
                    title, series = split_name(name)
                    logger.report_scalar(title, series, value=float(value), iteration=int(record.step or 0))
            elif record.kind == PARAMS:
                flat = record.data.get("flat") or {}
                self.task.connect(dict(flat), name=self.settings.get("section") or "General")
            elif record.kind == ARTIFACT:
                self._upload(record)
            elif record.kind == END:
                self._end(record.data.get("status"))

    def _upload(self, record: Record) -> None:
        data = record.data
        source = artifact_source(data)
        if source is None:
            raise MissingArtifact(f"checkpoint {data.get('path')} was removed before it could be uploaded")
        metadata = {"original_path": data.get("path"), "aliases": data.get("aliases")}
        ok = self.task.upload_artifact(data["name"], artifact_object=source, metadata=metadata, wait_on_upload=True)
        if ok is False:
            raise RuntimeError(f"ClearML did not store the checkpoint {data['name']}")
        release_staged(data)

    def _end(self, status: Optional[str]) -> None:
        task, self.task = self.task, None
        if status == "failed":
            task.mark_failed(ignore_errors=True, status_reason="training raised an exception")
        elif status == "interrupted":
            task.mark_stopped(force=True, status_message="training was interrupted")
        task.close()  # flushes the reporter; offline, it also zips the session

    def is_permanent(self, exc: BaseException) -> bool:
        """Checkpoints that vanished, and the TypeError/ValueError ClearML raises for values it will never take."""
        return isinstance(exc, (MissingArtifact, TypeError, ValueError))

    def latest_metrics(self) -> Optional[Dict[str, Tuple[float, int]]]:
        """Per metric, the latest (step, time) the task durably holds: offline, what its
        ``metrics.jsonl`` holds; online, what the server returns for the task's scalars."""
        if self.offline_folder:
            return read_offline_latest(Path(self.offline_folder))
        if self.task is None:
            return None
        latest: Dict[str, Tuple[float, int]] = {}
        for title, series_map in (self.task.get_reported_scalars() or {}).items():
            for series, points in series_map.items():
                xs = points.get("x") or []
                if xs:
                    latest[join_name(title, series)] = (float(max(xs)), _ANY_TIME)
        return latest

    def close(self) -> None:
        """Forget the task; ClearML closes an unclosed main task itself at interpreter exit."""
        self.task = None


_ANY_TIME = 2**62  # the server's answer has no time per value; its points are durable


def read_offline_events(folder: Path) -> Iterator[Dict[str, Any]]:
    """The events of an offline session's ``metrics.jsonl`` (each line a JSON list of events);
    a torn last line (the process died while writing it) ends the iteration."""
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                events = json.loads(line)
            except ValueError:
                return
            yield from (events if isinstance(events, list) else [events])


def read_offline_scalars(folder: Path) -> List[Tuple[str, int, float]]:
    """``(metric name, iteration, value)`` for every scalar of an offline session, in order."""
    return [
        (join_name(e["metric"], e["variant"]), int(e["iter"]), float(e["value"]))
        for e in read_offline_events(folder)
        if e.get("type") == "training_stats_scalar"
    ]


def read_offline_latest(folder: Path) -> Dict[str, Tuple[float, int]]:
    latest: Dict[str, Tuple[float, int]] = {}
    for event in read_offline_events(folder):
        if event.get("type") != "training_stats_scalar":
            continue
        key = join_name(event["metric"], event["variant"])
        mark = (float(event["iter"]), int(event.get("timestamp") or 0))
        if mark > latest.get(key, (float("-inf"), 0)):
            latest[key] = mark
    return latest


def build_sink(meta: Dict[str, Any]) -> ClearMLSink:
    """The ``SINK`` of :class:`ClearMLLogger`: its sink from a ``meta.json``."""
    return ClearMLSink(meta)
