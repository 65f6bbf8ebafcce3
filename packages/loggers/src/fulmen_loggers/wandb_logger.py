"""``WandbLogger``: history, config and model checkpoints to Weights & Biases (online or
offline), with ``wandb`` driven from the logger's delivery thread only.

``wandb`` already writes every record to its own local transaction log (``run-<id>.wandb``)
and uploads it from a separate service process, so once a run exists a network outage
does not stop ``run.log``. What fulmen adds: ``wandb.init`` (which can wait up to 90 s for the
server) never runs on the training thread, and while it fails records spool to disk; a
resumed fit continues the same run id and skips the steps that were already logged
(W&B keeps one history row per step and ignores steps lower than the current one online;
offline runs start counting again, hence fulmen's own bookkeeping).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from fulmen.loggers.arguments import resolve_save_dir

from fulmen_loggers._checkpoint_artifacts import MissingArtifact, artifact_source, release_staged
from fulmen_loggers._records import ARTIFACT, END, METRICS, PARAMS, Record
from fulmen_loggers._sink import Sink
from fulmen_loggers._tracking_logger import TrackingLogger

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def generate_id(length: int = 8) -> str:
    """A new run id in W&B's style (8 characters of ``[0-9a-z]``), chosen here so that the run
    directory has its name before ``wandb.init`` ever ran."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


class WandbLogger(TrackingLogger):
    """Log to Weights & Biases.

    Args:
        name: display name of the run (default ``$WANDB_NAME``, else W&B's).
        save_dir: local root (``Trainer`` passes ``default_root_dir``); the run directory is
            ``<save_dir>/wandb/<project>/<id>`` (spool, checkpoints, and wandb's own files
            unless ``dir=`` or ``$WANDB_DIR`` says otherwise).
        root_dir: the same folder under Lightning Fabric's name for it; pass ``save_dir`` or
            ``root_dir``, not both.
        version / id: the run id (default ``$WANDB_RUN_ID``, else a new random one). Given,
            or restored from a checkpoint, the run is resumed (``resume="allow"``).
        offline: ``mode="offline"`` (sync later with ``wandb sync``).
        dir: where wandb writes its ``wandb/`` folder.
        project: default ``$WANDB_PROJECT``, else ``"fulmen_logs"``.
        entity, group, tags, job_type, notes, mode, resume: passed to ``wandb.init``
            (``None`` lets wandb read ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``,
            ``WANDB_JOB_TYPE``, ``WANDB_NOTES``, ``WANDB_MODE``, ``WANDB_RESUME``).
        log_model: ``False``, ``True``/``"best"`` (best checkpoint at the end) or ``"all"``;
            files become ``model-<id>`` artifacts with aliases ``latest``/``best``.
        prefix: put before every metric name.
        settings: extra ``wandb.Settings`` fields, as a dict.
        queue_size, max_batch, flush_interval, retry_initial, retry_max, close_timeout:
            delivery settings, as for :class:`~fulmen_loggers.MLflowLogger`.
    """

    LABEL = "W&B"
    BACKEND = "wandb"
    SINK = "fulmen_loggers.wandb_logger:build_sink"
    # wandb's service keeps accepted records in memory until a 32 KiB block of its log fills
    # or the run finishes: a killed process loses them. Hence the journal (see _delivery).
    WRITE_AHEAD = True

    def __init__(
        self,
        name: Optional[str] = None,
        save_dir: Union[str, os.PathLike, None] = None,
        version: Optional[str] = None,
        offline: bool = False,
        dir: Optional[Union[str, os.PathLike]] = None,
        id: Optional[str] = None,
        project: Optional[str] = None,
        entity: Optional[str] = None,
        group: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        job_type: Optional[str] = None,
        notes: Optional[str] = None,
        mode: Optional[str] = None,
        resume: Optional[Union[bool, str]] = None,
        log_model: Any = False,
        prefix: str = "",
        settings: Optional[Dict[str, Any]] = None,
        *,
        root_dir: Union[str, os.PathLike, None] = None,
        **delivery: Any,
    ) -> None:
        save_dir = resolve_save_dir(type(self).__name__, save_dir, root_dir)
        super().__init__(save_dir, log_model=log_model, prefix=prefix, **delivery)
        env = os.environ
        self._run_name = name
        self._project = project or env.get("WANDB_PROJECT") or "fulmen_logs"
        self._version = id or version or env.get("WANDB_RUN_ID") or None
        self._dir = str(dir) if dir is not None else None
        self._entity = entity
        self._group = group
        self._tags = list(tags) if tags is not None else None
        self._job_type = job_type
        self._notes = notes
        self._mode = "offline" if offline else mode
        self._resume = resume
        self._wandb_settings = dict(settings or {})

    @property
    def name(self) -> str:
        """The W&B project (the folder the run directories sit in)."""
        return self._project

    @property
    def version(self) -> str:
        """The run id: as given, ``$WANDB_RUN_ID``, or a new one chosen on first use."""
        if self._version is None:
            self._version = generate_id()
        return self._version

    @property
    def id(self) -> str:
        """The run id, the same as :attr:`version`."""
        return self.version

    @property
    def project(self) -> str:
        """The W&B project the run belongs to."""
        return self._project

    def _root_dir(self) -> Path:
        return self._save_dir / "wandb" / (re.sub(r"[^\w.\-]+", "_", self._project) or "project")

    @property
    def log_dir(self) -> str:
        """The run directory ``<save_dir>/wandb/<project>/<id>``: spool, checkpoints, and wandb's own
        files unless ``dir`` or ``$WANDB_DIR`` says otherwise."""
        return str(self._root_dir() / str(self.version))

    def _settings(self) -> Dict[str, Any]:
        # Always explicit: wandb reads WANDB_DIR once per process, later loggers may differ.
        wandb_dir = self._dir or os.environ.get("WANDB_DIR") or str(Path(self.log_dir).resolve())
        # "allow": continue the run if it exists (a resumed fit, logging after finalize,
        # the replay command), create it otherwise.
        resume = "allow" if self._resume is None else self._resume
        return {
            "project": self._project,
            "entity": self._entity,
            "name": self._run_name,
            "id": self.version,
            "dir": wandb_dir,
            "group": self._group,
            "tags": self._tags,
            "job_type": self._job_type,
            "notes": self._notes,
            "mode": self._mode,
            "resume": resume,
            "settings": self._wandb_settings,
        }


class WandbSink(Sink):
    """Drives one ``wandb`` run from the delivery thread: ``wandb.init``, ``run.log``, artifacts, ``finish``."""
    label = "W&B"
    batch_limit = 1000  # each metrics or parameters record is a local call into the client's queue

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.settings = dict(meta.get("settings") or {})
        self.run = None

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """``wandb.init`` with the logger's settings (resume ``"allow"`` continues the run if it
        exists); each logger gets its own run, even several in one process."""
        import wandb

        s = self.settings
        if s.get("dir"):
            Path(s["dir"]).mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=s.get("project"),
            entity=s.get("entity"),
            name=s.get("name"),
            id=s["id"],
            dir=s.get("dir"),
            group=s.get("group"),
            tags=s.get("tags"),
            job_type=s.get("job_type"),
            notes=s.get("notes"),
            mode=s.get("mode"),
            resume=s.get("resume"),
        )
        if s.get("settings"):
            kwargs["settings"] = wandb.Settings(**s["settings"])
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            self.run = wandb.init(reinit="create_new", **kwargs)  # several runs per process (wandb >= 0.19)
        except (TypeError, ValueError):
            self.run = wandb.init(reinit=True, **kwargs)
        return {"id": self.run.id, "project": self.run.project, "dir": str(self.run.dir)}

    def send(self, chunk: List[Record]) -> None:
        """History rows at their step, config updates, checkpoint artifacts, and ``finish`` at the
        end (the run must be opened again before anything else is sent)."""
        if self.run is None:
            raise RuntimeError("the W&B run is finished; reopen it")
        for record in chunk:
            if record.kind == METRICS:
                self.run.log(dict(record.data), step=int(record.step))
            elif record.kind == PARAMS:
                self.run.config.update(
                    record.data.get("nested") or record.data.get("flat") or {}, allow_val_change=True
                )
            elif record.kind == ARTIFACT:
                self._log_artifact(record)
            elif record.kind == END:
                self.run.finish(exit_code=0 if record.data.get("status") == "success" else 1)
                self.run = None

    def _log_artifact(self, record: Record) -> None:
        import wandb

        data = record.data
        source = artifact_source(data)
        if source is None:
            raise MissingArtifact(f"checkpoint {data.get('path')} was removed before it could be uploaded")
        artifact = wandb.Artifact(
            name=f"model-{self.run.id}",
            type="model",
            metadata={"original_path": data.get("path"), "step": record.step, "aliases": data.get("aliases")},
        )
        artifact.add_file(source, name=data["name"])  # copied into wandb's staging area here
        self.run.log_artifact(artifact, aliases=list(data.get("aliases") or ["latest"]))
        release_staged(data)

    def is_permanent(self, exc: BaseException) -> bool:
        """Checkpoints that vanished, and the TypeError/ValueError wandb raises for values it will never take."""
        return isinstance(exc, (MissingArtifact, TypeError, ValueError))

    def latest_metrics(self) -> Optional[Dict[str, Tuple[float, int]]]:
        """What this run's local W&B logs durably hold (wandb syncs exactly those): per metric,
        the last step with a history row. One row per step, written once the step is over, so
        a row that is there holds every value logged at that step."""
        from wandb.proto import wandb_internal_pb2

        base = Path(self.settings["dir"]) / "wandb"
        run_id = self.settings["id"]
        latest: Dict[str, Tuple[float, int]] = {}
        for path in sorted(base.glob(f"*-{run_id}/run-{run_id}.wandb")):
            for payload in read_wandb_log(path):
                record = wandb_internal_pb2.Record()
                try:
                    record.ParseFromString(payload)
                except Exception:
                    break
                if record.WhichOneof("record_type") != "history":
                    continue
                items = {(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item}
                try:
                    step = float(json.loads(items.get("_step", "null")))
                except (TypeError, ValueError):
                    continue
                for key in items:
                    if not key.startswith("_") and (step, _ANY_TIME) > latest.get(key, (-math.inf, 0)):
                        latest[key] = (step, _ANY_TIME)
        return latest

    def close(self) -> None:
        """Forget the run; wandb itself finishes an unfinished run at interpreter exit."""
        self.run = None  # wandb finishes an unfinished run itself at interpreter exit


def build_sink(meta: Dict[str, Any]) -> WandbSink:
    """The ``SINK`` of :class:`WandbLogger`: its sink from a ``meta.json``."""
    return WandbSink(meta)


_ANY_TIME = 2**62  # a history row holds every value of its step, whenever it was logged
_BLOCK = 32768
_HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte)


def read_wandb_log(path: Path) -> Iterator[bytes]:
    """The complete records of a ``.wandb`` transaction log: a LevelDB-style log of 32 KiB
    blocks, each record a 7-byte header (checksum, length, type) and a payload, large
    payloads split FIRST/MIDDLE/LAST. A torn tail (the process died) ends the iteration."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return
    pos, fragments = _HEADER, b""
    while True:
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left  # block trailer padding
            continue
        if pos + 7 > len(data):
            return
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        end = pos + 7 + length
        if (kind == 0 and length == 0) or end > len(data):
            return
        payload, pos = data[pos + 7 : end], end
        if kind == 1:
            yield payload
        elif kind == 2:
            fragments = payload
        elif kind == 3:
            fragments += payload
        elif kind == 4:
            yield fragments + payload
            fragments = b""
