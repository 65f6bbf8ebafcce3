"""``TensorBoardLogger``: scalars, hyperparameters (with the run's metric names) and,
optionally, the model graph, as TensorBoard event files.

The event files are written by ``torch.utils.tensorboard.SummaryWriter`` on the logger's
delivery thread and flushed after every batch, so "delivered" means "in the file". A resumed
run opens its writer with ``purge_step = checkpoint step + 1``: TensorBoard then ignores what
the process that died wrote after the checkpoint, and the resumed run's values take their place.
"""

from __future__ import annotations

import base64
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from fulmen.loggers.arguments import resolve_save_dir

from fulmen_loggers._records import END, GRAPH, METRICS, PARAMS, FulmenLoggerWarning, Record
from fulmen_loggers._sink import Sink
from fulmen_loggers._tracking_logger import TrackingLogger, is_global_zero


class TensorBoardLogger(TrackingLogger):
    """Log to TensorBoard event files under ``<save_dir>/<name>/version_N[/<sub_dir>]``.

    The arguments are Lightning's: its Trainer's ``TensorBoardLogger(save_dir, ...)`` and
    Fabric's ``TensorBoardLogger(root_dir, ...)`` give the same layout here (positionally,
    the Trainer logger's order).

    Args:
        save_dir: root folder (``Trainer`` passes ``default_root_dir``).
        name: experiment folder (``"fulmen_logs"``, as the CSV logger; ``""`` or ``None`` for none).
        version: an int (``version_N``) or a folder name; default the next free number.
        log_graph: trace the module once at the start of fit (``module.example_input_array``
            or ``log_graph(model, input_array)``) and write its graph.
        default_hp_metric: with the hyperparameters, log Lightning's placeholder scalar
            ``hp_metric`` = -1 at step 0, so the HParams dashboard has a metric column even
            before the run logged one; ``False`` logs none.
        prefix: put before every metric name, joined with ``-``.
        sub_dir: an extra folder below the version (e.g. ``"train"``).
        flush_secs, max_queue: passed to ``SummaryWriter`` (fulmen also flushes after each batch).
        root_dir: Lightning Fabric's name for ``save_dir``; pass one of the two.
        queue_size, max_batch, flush_interval, retry_initial, retry_max, close_timeout:
            delivery settings, as for :class:`~fulmen_loggers.MLflowLogger`.

    TensorBoard has no artifact store: ``log_checkpoint`` does nothing here.
    """

    LABEL = "TensorBoard"
    BACKEND = "tensorboard"
    SINK = "fulmen_loggers.tensorboard_logger:build_sink"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike, None] = None,
        name: Optional[str] = "fulmen_logs",
        version: Optional[Union[int, str]] = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: Optional[Union[str, os.PathLike]] = None,
        flush_secs: int = 120,
        max_queue: int = 10,
        *,
        root_dir: Union[str, os.PathLike, None] = None,
        **delivery: Any,
    ) -> None:
        save_dir = resolve_save_dir(type(self).__name__, save_dir, root_dir)
        super().__init__(save_dir, log_model=False, prefix=prefix, **delivery)
        self._name = name or ""
        self._version = version
        self._sub_dir = str(sub_dir) if sub_dir is not None else None
        self._log_graph = bool(log_graph)
        self._default_hp_metric = bool(default_hp_metric)
        self._flush_secs = int(flush_secs)
        self._max_queue = int(max_queue)

    @property
    def name(self) -> str:
        """The experiment folder below ``save_dir`` (``""`` for none)."""
        return self._name

    @property
    def version(self) -> Union[int, str]:
        """The version folder's number or name: as given, else the next free ``version_N``."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    def _root_dir(self) -> Path:
        return self._save_dir / self._name if self._name else self._save_dir

    @property
    def root_dir(self) -> str:
        """``save_dir/name``, the folder holding every version (Lightning's property: the
        ``root_dir`` argument's ``name`` folder, not the argument itself)."""
        return str(self._root_dir())

    @property
    def sub_dir(self) -> Optional[str]:
        """The folder below the version that holds the event files, if one was given."""
        return self._sub_dir

    def log_hyperparams(self, params: Any) -> None:
        """The hyperparameters, and with ``default_hp_metric`` Lightning's ``hp_metric`` = -1
        at step 0, once: a resumed run whose run has them already sends neither again."""
        digest = self._params_digest
        super().log_hyperparams(params)
        if self._default_hp_metric and self._params_digest != digest and is_global_zero():
            self.log_metrics({"hp_metric": -1.0}, step=0)

    @property
    def log_dir(self) -> str:
        """Where the event files go: the version folder, and ``sub_dir`` below it if given."""
        base = super().log_dir
        return str(Path(base) / self._sub_dir) if self._sub_dir else base

    def _settings(self) -> Dict[str, Any]:
        return {
            "log_dir": str(Path(self.log_dir).resolve()),
            "flush_secs": self._flush_secs,
            "max_queue": self._max_queue,
        }

    def log_checkpoint(self, path: str, aliases: Optional[List[str]] = None) -> None:
        """TensorBoard has no artifact store: checkpoints are not uploaded."""
        pass

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Trace ``model`` once (on the calling thread: the model may live on a GPU) and hand the
        graph to the delivery thread. Called by the Trainer at the start of fit."""
        if not self._log_graph or not is_global_zero():
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "TensorBoardLogger(log_graph=True) needs an example input: set module.example_input_array "
                "or call logger.log_graph(model, input_array)",
                FulmenLoggerWarning,
                stacklevel=2,
            )
            return
        import torch
        from torch.utils.tensorboard._pytorch_graph import graph

        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        moved = _to_device(input_array, device)
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, as add_graph uses
                graph_def, stats = graph(model, moved)
        except Exception as exc:  # tracing fails for some models; the run must go on
            warnings.warn(
                f"TensorBoardLogger: could not trace the model graph: {exc}", FulmenLoggerWarning, stacklevel=2
            )
            return
        finally:
            model.train(was_training)
        data = {
            "graph": base64.b64encode(graph_def.SerializeToString()).decode(),
            "stats": base64.b64encode(stats.SerializeToString()).decode(),
        }
        self._start().submit(GRAPH, data)


def _to_device(value: Any, device: Any) -> Any:
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


class TensorBoardSink(Sink):
    """Writes the event files through one ``SummaryWriter``, on the delivery thread only."""
    label = "TensorBoard"
    rewinds_on_resume = True

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.settings = dict(meta.get("settings") or {})
        self.writer = None
        self.hparams: Optional[Dict[str, Any]] = None

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """A ``SummaryWriter`` on the run's folder. A resumed run purges the events after its
        checkpoint step: the dead process wrote them, and the resumed one writes those steps again."""
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.settings["log_dir"]
        self.writer = SummaryWriter(
            log_dir,
            max_queue=self.settings.get("max_queue", 10),
            flush_secs=self.settings.get("flush_secs", 120),
            purge_step=None if resume_step is None else int(resume_step) + 1,
        )
        return {"log_dir": log_dir}

    def chunks(self, records: List[Record]) -> Iterator[List[Record]]:
        """Records in order, a chunk (one write, one flush) closing at 1,000 records or at any non-metric record."""
        chunk: List[Record] = []
        for record in records:
            chunk.append(record)
            if record.kind != METRICS or len(chunk) >= 1000:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def send(self, chunk: List[Record]) -> None:
        """Scalars, hyperparameters (the HParams plugin's session start), the model graph, and at
        the end the HParams summary naming the run's metrics with how the run ended; then flush."""
        writer = self.writer
        for record in chunk:
            if record.kind == METRICS:
                walltime = record.ts / 1000.0
                for key, value in record.data.items():
                    writer.add_scalar(key, value, global_step=record.step, walltime=walltime)
            elif record.kind == PARAMS:
                self.hparams = {k: v for k, v in record.data.get("flat", {}).items()}
                _, ssi, _ = _hparams(self.hparams, {})
                writer._get_file_writer().add_summary(ssi, walltime=record.ts / 1000.0)
            elif record.kind == GRAPH:
                from tensorboard.compat.proto.config_pb2 import RunMetadata
                from tensorboard.compat.proto.graph_pb2 import GraphDef

                graph_def = GraphDef.FromString(base64.b64decode(record.data["graph"]))
                stats = RunMetadata.FromString(base64.b64decode(record.data["stats"]))
                writer._get_file_writer().add_graph((graph_def, stats), walltime=record.ts / 1000.0)
            elif record.kind == END:
                keys = list(record.data.get("metric_keys") or [])
                status = record.data.get("status")
                # The experiment summary names the run's metrics, so the HParams dashboard shows
                # them beside the hyperparameters; the session end records how the run ended.
                exp, _, sei = _hparams(self.hparams or {}, {k: 0.0 for k in keys})
                file_writer = writer._get_file_writer()
                if self.hparams is not None:
                    file_writer.add_summary(exp)
                from tensorboard.plugins.hparams.api_pb2 import Status

                sei = _session_end(sei, Status.Value("STATUS_SUCCESS" if status == "success" else "STATUS_FAILURE"))
                file_writer.add_summary(sei)
        writer.flush()

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _hparams(hparam_dict: Dict[str, Any], metric_dict: Dict[str, float]):
    from torch.utils.tensorboard.summary import hparams

    return hparams(hparam_dict, metric_dict)


def _session_end(summary, status):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    content = HParamsPluginData(session_end_info=SessionEndInfo(status=status), version=PLUGIN_DATA_VERSION)
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])


def build_sink(meta: Dict[str, Any]) -> TensorBoardSink:
    """The ``SINK`` of :class:`TensorBoardLogger`: its sink from a ``meta.json``."""
    return TensorBoardSink(meta)
