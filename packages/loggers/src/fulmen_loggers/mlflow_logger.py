"""``MLflowLogger``: metrics, parameters, tags and checkpoints to an MLflow tracking server
or a local ``sqlite:///`` store, without ever making a training step wait for it.

Calls go through ``MlflowClient`` on the logger's delivery thread, batched with ``log_batch``
(up to 1,000 metrics and 100 parameters per call). The MLflow client's own HTTP retries are
turned down for that thread's calls (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` unless you set them): with MLflow's defaults one call
to a server that is down blocks about four minutes before failing; fulmen retries with its
own backoff instead and spools records to disk in the meantime.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from fulmen.loggers.arguments import resolve_save_dir

from fulmen_loggers._checkpoint_artifacts import MissingArtifact, artifact_source, release_staged
from fulmen_loggers._records import ARTIFACT, END, METRICS, PARAMS, FulmenLoggerWarning, Record
from fulmen_loggers._sink import Sink
from fulmen_loggers._tracking_logger import TrackingLogger

# Tags each run with its run directory's key (see ``_run_created_earlier``).
RUN_KEY_TAG = "fulmen.run_key"

# Defaults for the delivery thread's MLflow HTTP calls (environment variables win).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
PERMANENT_ERROR_CODES = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "MALFORMED_REQUEST",
    "INVALID_STATE",
    "RESOURCE_DOES_NOT_EXIST",
}
_BAD_CHARS = re.compile(r"[^/\w.\- :]")


def _safe_folder(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "experiment"


class MLflowLogger(TrackingLogger):
    """Log to MLflow.

    Args:
        experiment_name: created if missing. Default: ``$MLFLOW_EXPERIMENT_NAME``, else the
            experiment ``$MLFLOW_EXPERIMENT_ID``, else ``"fulmen_logs"``.
        run_name: display name of a new run.
        tracking_uri: default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<save_dir>/mlflow.db``.
        tags: tags of a new run (MLflow's context tags such as the source file are added).
        save_dir: local root (``Trainer`` passes ``default_root_dir``); the run directory
            ``<save_dir>/mlflow/<experiment>/version_N`` holds the spool and, when this is
            the Trainer's first logger, the checkpoints.
        root_dir: the same folder under Lightning Fabric's name for it; pass ``save_dir`` or
            ``root_dir``, not both.
        log_model: ``False`` (no upload), ``True``/``"best"`` (the best checkpoint when
            training ends), ``"all"`` (every checkpoint as ModelCheckpoint writes it). Files
            go to the run's artifacts under ``artifact_path``.
        prefix: put before every metric name.
        artifact_location: artifact root of a new experiment (for local stores the default
            is ``<save_dir>/mlartifacts``, not the current directory).
        run_id: continue this existing run. Default ``$MLFLOW_RUN_ID``.
        artifact_path: folder of checkpoint artifacts in the run (``"checkpoints"``).
        http_timeout / http_max_retries: ``MLFLOW_HTTP_REQUEST_TIMEOUT`` /
            ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` for the delivery thread's calls. Given here
            they are set; otherwise they are set only if the environment does not set them.
            (They are process-wide environment variables, read by MLflow at call time.)
        queue_size, max_batch, flush_interval, retry_initial, retry_max, close_timeout:
            delivery settings: records buffered in memory before spooling to disk (10,000),
            records per backend call (1,000), seconds to gather a batch (1.0), first and
            longest retry wait (0.5 s, 30 s), longest wait at the end of training (30 s).
    """

    LABEL = "MLflow"
    BACKEND = "mlflow"
    SINK = "fulmen_loggers.mlflow_logger:build_sink"

    def __init__(
        self,
        experiment_name: Optional[str] = None,
        run_name: Optional[str] = None,
        tracking_uri: Optional[str] = None,
        tags: Optional[Dict[str, Any]] = None,
        save_dir: Union[str, os.PathLike, None] = None,
        log_model: Any = False,
        prefix: str = "",
        artifact_location: Optional[str] = None,
        run_id: Optional[str] = None,
        artifact_path: str = "checkpoints",
        http_timeout: Optional[float] = None,
        http_max_retries: Optional[int] = None,
        *,
        root_dir: Union[str, os.PathLike, None] = None,
        **delivery: Any,
    ) -> None:
        save_dir = resolve_save_dir(type(self).__name__, save_dir, root_dir)
        super().__init__(save_dir, log_model=log_model, prefix=prefix, **delivery)
        env = os.environ
        self._experiment_id = None
        if experiment_name is None:
            experiment_name = env.get("MLFLOW_EXPERIMENT_NAME") or None
            if experiment_name is None:
                self._experiment_id = env.get("MLFLOW_EXPERIMENT_ID") or None
                if self._experiment_id is None:
                    experiment_name = "fulmen_logs"
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._tracking_uri = tracking_uri or env.get("MLFLOW_TRACKING_URI") or self._default_uri()
        self._tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self._artifact_location = artifact_location
        self._run_id_arg = run_id or env.get("MLFLOW_RUN_ID") or None
        self._artifact_path = artifact_path.strip("/") or "checkpoints"
        self._http_timeout = http_timeout
        self._http_max_retries = http_max_retries
        self._version: Any = self._run_id_arg  # a given run always maps to the same folder

    def _default_uri(self) -> str:
        return f"sqlite:///{(self._save_dir / 'mlflow.db').resolve()}"

    @property
    def name(self) -> str:
        """The experiment's name (``experiment_<id>`` when only an experiment id was given)."""
        return self._experiment_name or f"experiment_{self._experiment_id}"

    @property
    def version(self) -> Any:
        """The local run folder's name: the given run id, else the next free ``version_N``."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    @property
    def experiment_name(self) -> Optional[str]:
        """The experiment name resolved at construction; None when only an id was given."""
        return self._experiment_name

    @property
    def tracking_uri(self) -> str:
        """Where the client sends its calls: the argument, ``$MLFLOW_TRACKING_URI`` or the local sqlite store."""
        return self._tracking_uri

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id, once the delivery thread created or found the run."""
        return self.identity.get("run_id")

    def _root_dir(self) -> Path:
        return self._save_dir / "mlflow" / _safe_folder(self.name)

    def _metric_name(self, name: str) -> str:
        fixed = _BAD_CHARS.sub("_", name)
        fixed = "/".join(part for part in fixed.split("/") if part not in ("", ".", "..")) or "_"
        if fixed != name:
            warnings.warn(
                f"MLflow: metric {name!r} is logged as {fixed!r} (MLflow's naming rules)",
                FulmenLoggerWarning,
                stacklevel=3,
            )
        return fixed

    def _settings(self) -> Dict[str, Any]:
        location = self._artifact_location
        if location is None and _is_local_store(self._tracking_uri):
            location = (self._save_dir / "mlartifacts").resolve().as_uri()
        return {
            "tracking_uri": self._tracking_uri,
            "experiment_name": self._experiment_name,
            "experiment_id": self._experiment_id,
            "run_name": self._run_name,
            "run_id": self._run_id_arg,
            "tags": self._tags,
            "artifact_location": location,
            "artifact_path": self._artifact_path,
            "http_timeout": self._http_timeout,
            "http_max_retries": self._http_max_retries,
        }


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure_http(settings: Dict[str, Any]) -> None:
    """Make the MLflow client fail fast; fulmen does the retrying (see the module docstring)."""
    explicit = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": settings.get("http_timeout"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": settings.get("http_max_retries"),
    }
    for var, default in HTTP_DEFAULTS.items():
        value = explicit.get(var)
        if value is not None:
            os.environ[var] = str(int(value))
        else:
            os.environ.setdefault(var, default)


class MLflowSink(Sink):
    """The MLflow side of :class:`MLflowLogger`: an ``MlflowClient`` built from ``meta.json`` on
    the delivery thread (or by ``fulmen loggers replay``), so MLflow is imported only there."""
    label = "MLflow"

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.settings = dict(meta.get("settings") or {})
        identity = dict(meta.get("identity") or {})
        restored = dict(meta.get("restored_identity") or {})
        self.run_id: Optional[str] = identity.get("run_id") or restored.get("run_id") or self.settings.get("run_id")
        self.replaying = bool(meta.get("replaying"))
        self.run_key: Optional[str] = meta.get("run_key")
        configure_http(self.settings)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.settings["tracking_uri"])

    # ------------------------------------------------------------------ run
    def _experiment_id(self) -> str:
        if self.settings.get("experiment_id") and not self.settings.get("experiment_name"):
            return str(self.settings["experiment_id"])
        name = self.settings["experiment_name"]
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=self.settings.get("artifact_location"))
        except MlflowException:
            experiment = self.client.get_experiment_by_name(name)  # another process created it
            if experiment is None:
                raise
            return experiment.experiment_id

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """Continue the known run (running again, unless this is a replay), else the run an
        earlier ``create_run`` of this run directory made, else create one tagged with the run key."""
        if self.run_id:
            run = self.client.get_run(self.run_id)
            if run.info.status != "RUNNING" and not self.replaying:  # a resumed or continued run
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = dict(self.settings.get("tags") or {})
            try:
                from mlflow.tracking.context.registry import resolve_tags

                tags = resolve_tags(tags)
            except Exception:
                pass
            experiment_id = self._experiment_id()
            run = self._run_created_earlier(experiment_id)
            if run is None:
                if self.run_key:
                    tags[RUN_KEY_TAG] = self.run_key
                run = self.client.create_run(experiment_id, run_name=self.settings.get("run_name"), tags=tags)
            self.run_id = run.info.run_id
        return {"run_id": self.run_id, "experiment_id": run.info.experiment_id}

    def _run_created_earlier(self, experiment_id: str):
        """The run an earlier ``create_run`` of this run directory made, if one did: its reply
        may have been lost to a timeout, or the process may have died before noting the id.
        Creating again would split the metrics over two runs."""
        if not self.run_key:
            return None
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{self.run_key}'", max_results=1
        )
        return runs[0] if runs else None

    def latest_metrics(self) -> Optional[Dict[str, Tuple[float, int]]]:
        """MLflow keeps each metric's latest value (highest step, then timestamp) on the run."""
        run = self.client.get_run(self.run_id)
        metrics = getattr(run.data, "_metric_objs", None)
        if metrics is None:
            metrics = run.data.to_proto().metrics
        return {m.key: (m.step, m.timestamp) for m in metrics}

    # ------------------------------------------------------------------ records
    def chunks(self, records: List[Record]) -> Iterator[List[Record]]:
        """Metrics and params in ``log_batch``-sized groups (MLflow's per-call limits); an
        artifact and the run's end each go alone."""
        chunk: List[Record] = []
        n_metrics = n_params = 0
        for record in records:
            if record.kind in (METRICS, PARAMS):
                m = len(record.data) if record.kind == METRICS else 0
                p = len(record.data.get("flat", {})) if record.kind == PARAMS else 0
                if chunk and (n_metrics + m > MAX_METRICS_PER_BATCH or n_params + p > MAX_PARAMS_PER_BATCH):
                    yield chunk
                    chunk, n_metrics, n_params = [], 0, 0
                chunk.append(record)
                n_metrics += m
                n_params += p
            else:
                if chunk:
                    yield chunk
                    chunk, n_metrics, n_params = [], 0, 0
                yield [record]
        if chunk:
            yield chunk

    def send(self, chunk: List[Record]) -> None:
        """One ``log_batch``, one checkpoint upload, or the run's end with its status."""
        kind = chunk[0].kind
        if kind in (METRICS, PARAMS):
            self._log_batch(chunk)
        elif kind == ARTIFACT:
            self._log_artifact(chunk[0].data)
        elif kind == END:
            status = STATUS.get(chunk[0].data.get("status"), "FINISHED")
            self.client.set_terminated(self.run_id, status=status, end_time=chunk[0].ts)

    def _log_batch(self, chunk: List[Record]) -> None:
        from mlflow.entities import Metric, Param

        metrics: List[Any] = []
        params: List[Any] = []
        for record in chunk:
            if record.kind == METRICS:
                metrics.extend(Metric(k, float(v), record.ts, int(record.step or 0)) for k, v in record.data.items())
            else:
                for key, value in record.data.get("flat", {}).items():
                    params.append(Param(key, str(value)[:MAX_PARAM_VALUE_LENGTH]))
        # One record may itself exceed the limits (a very wide dict): several calls then.
        while metrics or params:
            take_m = metrics[:MAX_METRICS_PER_BATCH]
            take_p = params[:MAX_PARAMS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=take_m, params=take_p)
            metrics = metrics[len(take_m) :]
            params = params[len(take_p) :]

    def _log_artifact(self, data: Dict[str, Any]) -> None:
        source = artifact_source(data)
        if source is None:
            raise MissingArtifact(f"checkpoint {data.get('path')} was removed before it could be uploaded")
        folder = self.settings.get("artifact_path") or "checkpoints"
        self.client.log_artifact(self.run_id, source, artifact_path=folder)
        if "best" in (data.get("aliases") or []):
            self.client.set_tag(self.run_id, "fulmen.best_checkpoint", posixpath.join(folder, data["name"]))
        release_staged(data)

    def is_permanent(self, exc: BaseException) -> bool:
        """Refusals MLflow would repeat (bad values, a run that does not exist) and checkpoints that
        vanished; anything else, network errors included, is retried."""
        if isinstance(exc, MissingArtifact):
            return True
        code = getattr(exc, "error_code", None)
        return isinstance(code, str) and code in PERMANENT_ERROR_CODES


def build_sink(meta: Dict[str, Any]) -> MLflowSink:
    """The ``SINK`` of :class:`MLflowLogger`: its sink from a ``meta.json``."""
    return MLflowSink(meta)
