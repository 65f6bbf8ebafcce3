"""``CometLogger``: metrics, parameters and checkpoints to a Comet experiment (online, or
offline to a local archive), with ``comet_ml`` driven from the logger's delivery thread only.

Comet's experiment queues messages in memory and streams them from its own thread (online)
or into a temporary messages file that becomes ``<offline_directory>/<key>*.zip`` only when
the experiment ends (offline): a killed process loses them, so records are written ahead to
fulmen's journal, as for W&B. The experiment key is chosen here, before anything reaches
Comet, so that the run directory is named after it and a resumed fit (or ``fulmen loggers
replay``) continues the same experiment (``mode="get_or_create"``). Offline, each process
writes its own archive with the same key; ``comet upload`` appends them to one experiment.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from fulmen.loggers.arguments import resolve_save_dir

from fulmen_loggers._checkpoint_artifacts import MissingArtifact, artifact_source, release_staged
from fulmen_loggers._records import ARTIFACT, END, METRICS, PARAMS, Record
from fulmen_loggers._sink import DeliveryOptions, Sink
from fulmen_loggers._tracking_logger import TrackingLogger

_DELIVERY_ARGS = set(inspect.signature(DeliveryOptions.__init__).parameters) - {"self"}

# ExperimentConfig fields fulmen sets unless given: fulmen logs metrics and parameters itself,
# from another thread, so Comet's framework patching, argv parsing and stdout capture stay off.
CONFIG_DEFAULTS = {
    "auto_metric_logging": False,
    "auto_param_logging": False,
    "auto_output_logging": False,
    "parse_args": False,
    "log_graph": False,
    "display_summary_level": 0,
}


def generate_key() -> str:
    """A new experiment key: 32 hexadecimal characters, which Comet accepts (32 to 50 alphanumerics)."""
    return uuid.uuid4().hex


class CometLogger(TrackingLogger):
    """Log to Comet, under Lightning's ``CometLogger`` arguments.

    Args:
        api_key, workspace, project: Comet's (default ``$COMET_API_KEY``, ``$COMET_WORKSPACE``,
            ``$COMET_PROJECT_NAME``, else project ``"fulmen_logs"``).
        experiment_key: the experiment (default ``$COMET_EXPERIMENT_KEY``, else a new one);
            a checkpoint's experiment is continued by itself.
        mode: ``"get_or_create"`` (default), ``"get"`` or ``"create"``, as ``comet_ml.start`` takes it.
        online: ``False`` writes an offline archive (upload it with ``comet upload``); ``None``
            lets Comet decide (``$COMET_START_ONLINE``).
        prefix: put before every metric name.
        save_dir: local root (``Trainer`` passes ``default_root_dir``); the run directory is
            ``<save_dir>/comet/<project>/<key>`` (spool, checkpoints, and the offline archives
            unless ``offline_directory=`` or ``$COMET_OFFLINE_DIRECTORY`` says otherwise).
        root_dir: the same folder under Lightning Fabric's name for it; pass one of them.
        log_model: ``False``, ``True``/``"best"`` (best checkpoint at the end) or ``"all"``; files
            go to the experiment's model ``checkpoints``, their aliases in its metadata.
        **kwargs: ``comet_ml.ExperimentConfig`` fields (``name``, ``tags``, ``offline_directory``,
            ``log_code``, ...), as Lightning passes them; and fulmen's delivery settings
            (``queue_size``, ``max_batch``, ``flush_interval``, ``retry_initial``, ``retry_max``,
            ``close_timeout``, as for :class:`~fulmen_loggers.MLflowLogger`).
    """

    LABEL = "Comet"
    BACKEND = "comet"
    SINK = "fulmen_loggers.comet_logger:build_sink"
    WRITE_AHEAD = True  # Comet holds messages in memory until they stream or the archive is written

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        project: Optional[str] = None,
        experiment_key: Optional[str] = None,
        mode: Optional[str] = None,
        online: Optional[bool] = None,
        prefix: str = "",
        save_dir: Union[str, os.PathLike, None] = None,
        root_dir: Union[str, os.PathLike, None] = None,
        log_model: Any = False,
        **kwargs: Any,
    ) -> None:
        save_dir = resolve_save_dir(type(self).__name__, save_dir, root_dir)
        delivery = {k: kwargs.pop(k) for k in list(kwargs) if k in _DELIVERY_ARGS}
        super().__init__(save_dir, log_model=log_model, prefix=prefix or "", **delivery)
        env = os.environ
        if mode not in (None, "get_or_create", "get", "create"):
            raise ValueError(f"CometLogger(mode={mode!r}): use 'get_or_create', 'get' or 'create'")
        self._api_key = api_key
        self._workspace = workspace
        self._project = project or env.get("COMET_PROJECT_NAME") or "fulmen_logs"
        self._version: Optional[str] = experiment_key or env.get("COMET_EXPERIMENT_KEY") or None
        self._mode = mode
        self._online = online
        self._config = dict(kwargs)

    @property
    def name(self) -> str:
        """The Comet project (the folder the run directories sit in)."""
        return self._project

    @property
    def version(self) -> str:
        """The experiment key: as given, ``$COMET_EXPERIMENT_KEY``, or a new one chosen on first use."""
        if self._version is None:
            self._version = generate_key()
        return self._version

    @property
    def experiment_key(self) -> str:
        """The experiment key, the same as :attr:`version`."""
        return self.version

    def _root_dir(self) -> Path:
        return self._save_dir / "comet" / (re.sub(r"[^\w.\-]+", "_", self._project).strip("._") or "project")

    @property
    def log_dir(self) -> str:
        """The run directory ``<save_dir>/comet/<project>/<key>``."""
        return str(self._root_dir() / self.version)

    @property
    def offline_directory(self) -> str:
        """Where an offline experiment's archives go: the argument, ``$COMET_OFFLINE_DIRECTORY``,
        else the run directory (never the current directory, Comet's own default)."""
        given = self._config.get("offline_directory") or os.environ.get("COMET_OFFLINE_DIRECTORY")
        return str(given) if given else str(Path(self.log_dir).resolve())

    def _sink_factory(self):
        """The API key goes to the sink object itself, never into ``meta.json`` nor module
        state: it lives as long as this logger's delivery. A replay reads ``$COMET_API_KEY``
        or Comet's config file."""
        api_key = self._api_key
        return lambda meta: CometSink(meta, api_key=api_key)

    def _settings(self) -> Dict[str, Any]:
        config = dict(CONFIG_DEFAULTS)
        config.update(self._config)
        config["offline_directory"] = self.offline_directory
        return {
            "workspace": self._workspace,
            "project": self._project,
            "experiment_key": self.version,
            "mode": self._mode or "get_or_create",
            "online": self._online,
            "config": config,
        }


class CometSink(Sink):
    """Drives one Comet experiment from the delivery thread: ``comet_ml.start``, ``log_metrics``,
    ``log_parameters``, ``log_model`` and ``end``."""

    label = "Comet"
    batch_limit = 1000  # each metrics or parameters record is a local call into the client's queue

    def __init__(self, meta: Dict[str, Any], api_key: Optional[str] = None) -> None:
        self.settings = dict(meta.get("settings") or {})
        self.key = str(self.settings["experiment_key"])
        self.experiment = None
        self.offline: Optional[bool] = None
        self.api_key = api_key  # None: Comet reads $COMET_API_KEY or its config file

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """Start (or continue: ``get_or_create``) the experiment with the logger's key."""
        import comet_ml

        s = self.settings
        config = dict(s.get("config") or {})
        Path(config["offline_directory"]).mkdir(parents=True, exist_ok=True)
        self.experiment = comet_ml.start(
            api_key=self.api_key,
            workspace=s.get("workspace"),
            project=s.get("project"),
            experiment_key=self.key,
            mode=s.get("mode") or "get_or_create",
            online=s.get("online"),
            experiment_config=comet_ml.ExperimentConfig(**config),
        )
        self.offline = isinstance(self.experiment, comet_ml.OfflineExperiment)
        return {"experiment_key": self.experiment.get_key(), "offline": self.offline}

    def send(self, chunk: List[Record]) -> None:
        """Metrics at their step, flat parameters, checkpoints as model files, and ``end`` (which
        streams the rest, or writes the offline archive)."""
        if self.experiment is None:
            raise RuntimeError("the Comet experiment has ended; reopen it")
        for record in chunk:
            if record.kind == METRICS:
                self.experiment.log_metrics(dict(record.data), step=int(record.step or 0))
            elif record.kind == PARAMS:
                self.experiment.log_parameters(dict(record.data.get("flat") or {}))
            elif record.kind == ARTIFACT:
                self._log_model(record)
            elif record.kind == END:
                experiment, self.experiment = self.experiment, None
                experiment.log_other("fulmen_status", record.data.get("status") or "success")
                experiment.end()

    def _log_model(self, record: Record) -> None:
        data = record.data
        source = artifact_source(data)
        if source is None:
            raise MissingArtifact(f"checkpoint {data.get('path')} was removed before it could be uploaded")
        # Comet copies the file into its upload area here, so the staged link can go right away.
        self.experiment.log_model(
            "checkpoints",
            source,
            file_name=data["name"],
            metadata={"original_path": data.get("path"), "aliases": data.get("aliases")},
        )
        release_staged(data)

    def is_permanent(self, exc: BaseException) -> bool:
        """Checkpoints that vanished, and the TypeError/ValueError Comet raises for values it will never take."""
        return isinstance(exc, (MissingArtifact, TypeError, ValueError))

    def latest_metrics(self) -> Optional[Dict[str, Tuple[float, int]]]:
        """Per metric, the latest (step, time) the experiment durably holds: offline, what the
        archives with its key hold; online, the step summary Comet's REST API returns."""
        if self.offline is not False:
            directory = Path((self.settings.get("config") or {}).get("offline_directory") or ".")
            found = read_offline_latest(directory, self.key)
            if found or self.offline:
                return found
        try:
            import comet_ml

            api = comet_ml.API(api_key=self.api_key)
            summary = api.get_experiment_by_key(self.key).get_metrics_summary()
        except Exception:
            return None  # cannot say: the engine falls back to its own ledger
        return {
            str(m["name"]): (float(m["stepMax"]), _ANY_TIME)
            for m in summary or []
            if m.get("stepMax") is not None and m.get("name")
        }

    def close(self) -> None:
        """Forget the experiment; Comet ends an unended one itself at interpreter exit."""
        self.experiment = None


_ANY_TIME = 2**62  # the summary has no time per value; what it counts is durable


def offline_archives(directory: Path, key: str) -> List[Path]:
    """The offline archives of experiment ``key`` in ``directory`` (one per process), oldest first."""
    found = [p for p in Path(directory).glob(f"{key}*.zip") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def read_archive(path: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """An offline archive's ``experiment.json`` and its messages (one JSON object a line)."""
    with zipfile.ZipFile(path) as archive:
        experiment = json.loads(archive.read("experiment.json"))
        lines = archive.read("messages.json").decode("utf-8").splitlines()
    return experiment, [json.loads(line) for line in lines if line.strip()]


def read_offline_metrics(directory: Path, key: str) -> List[Tuple[str, int, float, int]]:
    """``(name, step, value, local timestamp)`` of every metric message of ``key``'s archives."""
    out = []
    for path in offline_archives(directory, key):
        try:
            experiment, messages = read_archive(path)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            continue  # an archive being written, or damaged: Comet will not upload it either
        if experiment.get("offline_id") != key:
            continue
        for message in messages:
            if message.get("type") != "metric_msg":
                continue
            payload = message["payload"]
            metric = payload["metric"]
            step = metric.get("step")
            out.append((metric["metricName"], int(step or 0), metric["metricValue"], int(payload.get("local_timestamp") or 0)))
    return out


def read_offline_latest(directory: Path, key: str) -> Dict[str, Tuple[float, int]]:
    latest: Dict[str, Tuple[float, int]] = {}
    for name, step, _, ts in read_offline_metrics(directory, key):
        if (float(step), ts) > latest.get(name, (float("-inf"), 0)):
            latest[name] = (float(step), ts)
    return latest


def build_sink(meta: Dict[str, Any]) -> CometSink:
    """The ``SINK`` of :class:`CometLogger`: its sink from a ``meta.json``."""
    return CometSink(meta)
