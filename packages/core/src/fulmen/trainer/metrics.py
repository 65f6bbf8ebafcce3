"""What ``self.log`` records, kept on the device until someone needs a number.

Reading a CUDA tensor's value (``.item()``) waits for the GPU, so the training step never
does it: step values are kept as tensors, epoch values accumulate as tensors, and floats are
produced only at ``log_every_n_steps`` boundaries and epoch ends. Each ``log`` call costs a
dict lookup and at most one small device op, whatever the number of metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from fulmen.errors import FulmenConfigError, FulmenUserCodeError
from fulmen.trainer import metric_objects
from fulmen.utilities.apply import first_batch_size
from fulmen.utilities.scalars import detached_scalar

_REDUCE_ALIASES = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_REDUCE_CALLABLES = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min"}

# Default on_step/on_epoch by where ``self.log`` is called (Lightning's defaults).
STEP_PHASES = frozenset({"train_step"})
_NO_BATCH = object()


def reduce_name(reduce_fx: Any) -> str:
    if isinstance(reduce_fx, str) and reduce_fx.lower() in _REDUCE_ALIASES:
        return _REDUCE_ALIASES[reduce_fx.lower()]
    if reduce_fx in _REDUCE_CALLABLES:
        return _REDUCE_CALLABLES[reduce_fx]
    raise FulmenConfigError(
        f"reduce_fx={reduce_fx!r} is not supported; use 'mean', 'sum', 'max' or 'min' "
        "(or torch.mean/sum/max/min)"
    )


@dataclass
class _Metric:
    stage: str
    prog_bar: bool
    logger: bool
    on_step: bool
    on_epoch: bool
    reduce: str
    sync_dist: bool
    total: Any = None  # weighted sum (mean/sum) or running max/min
    weight: float = 0.0
    # A torchmetrics Metric logged as the value: it accumulates itself, the store computes
    # and resets it. ``source`` is None after a resume until the next log call hands it over
    # (when it is not an attribute of the module the checkpoint could find it by).
    holds_object: bool = False
    source: Any = None


class MetricStore:
    """Per-trainer record of logged values; ``stage`` is train/validate/test/predict/sanity."""

    def __init__(self, all_reduce: Callable[[torch.Tensor, str], torch.Tensor], device_fn: Callable[[], torch.device]) -> None:
        self._all_reduce = all_reduce
        self._device_fn = device_fn
        self.phase = "train_step"  # where self.log is being called from
        self.stage = "train"
        self.dataloader_idx: Optional[int] = None
        self.multiple_dataloaders = False
        self._batch_size: Optional[int] = None
        self._size_source: Any = _NO_BATCH  # a batch whose size is not read yet
        self._metrics: Dict[str, _Metric] = {}
        self.step_values: Dict[str, torch.Tensor] = {}  # logged in the current batch
        self.callback_metrics: Dict[str, torch.Tensor] = {}
        self.logged_metrics: Dict[str, float] = {}
        self.progress_bar_metrics: Dict[str, float] = {}

    # ------------------------------------------------------------------ recording
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: Optional[bool] = None,
        on_epoch: Optional[bool] = None,
        reduce_fx: Any = "mean",
        sync_dist: bool = False,
        batch_size: Optional[int] = None,
        add_dataloader_idx: bool = True,
    ) -> None:
        if self.dataloader_idx is not None and self.multiple_dataloaders and add_dataloader_idx:
            name = f"{name}/dataloader_idx_{self.dataloader_idx}"
        metric = self._metrics.get(name)
        if metric is None or metric.stage != self.stage:
            metric = self._new_metric(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist)
        if metric.holds_object:
            self._log_metric_object(name, metric, value)
            return
        value = self._as_tensor(name, value)
        if metric.sync_dist:
            value = self._all_reduce(value, metric.reduce if metric.reduce != "mean" else "mean")
        if metric.on_step:
            self.step_values[name] = value
            self.callback_metrics[name] = value
            if metric.on_epoch:
                self.callback_metrics[name + "_step"] = value
        if metric.on_epoch:
            size = batch_size if batch_size is not None else (self.batch_size or 1)
            self._accumulate(metric, value, size)

    def _new_metric(self, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist) -> _Metric:
        if not isinstance(name, str) or not name:
            raise FulmenUserCodeError(f"self.log needs a non-empty string name, got {name!r}")
        step_default = self.phase in STEP_PHASES
        metric = _Metric(
            stage=self.stage,
            prog_bar=bool(prog_bar),
            logger=bool(logger),
            on_step=step_default if on_step is None else bool(on_step),
            on_epoch=(not step_default) if on_epoch is None else bool(on_epoch),
            reduce=reduce_name(reduce_fx),
            sync_dist=bool(sync_dist),
        )
        if not isinstance(value, torch.Tensor) and metric_objects.is_metric(value):
            # torchmetrics syncs its states across ranks in compute(): sync_dist has no job.
            metric.holds_object, metric.sync_dist = True, False
        if metric.on_step and self.phase not in STEP_PHASES:
            # Outside the training batch there is no step to attach the value to.
            metric.on_step = False
            metric.on_epoch = True
        if not metric.on_step and not metric.on_epoch:
            raise FulmenConfigError(
                f"self.log({name!r}, on_step=False, on_epoch=False) records nothing; set one to True"
            )
        self._metrics[name] = metric
        return metric

    def _as_tensor(self, name: str, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return detached_scalar(value, f"self.log({name!r})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                import numpy as np

                if isinstance(value, np.generic):
                    return torch.tensor(float(value), dtype=torch.float32)
            except ImportError:
                pass
            metric_objects.check_loggable(name, value)
            if metric_objects.is_metric(value):
                raise FulmenUserCodeError(
                    f"self.log({name!r}) got a torchmetrics Metric, but this epoch the name was "
                    "first logged with a number; log one kind of value under a name"
                )
            raise FulmenUserCodeError(
                f"self.log({name!r}) got a {type(value).__name__}; log a number or a scalar tensor"
            )
        # float32 explicitly: inside a bf16-true step the default dtype is bfloat16.
        return torch.tensor(float(value), dtype=torch.float32)

    def _log_metric_object(self, name: str, metric: _Metric, value: Any) -> None:
        """The Metric accumulates itself; a step value is what its last forward returned."""
        if value is not metric.source:
            if not metric_objects.is_metric(value):
                raise FulmenUserCodeError(
                    f"self.log({name!r}) got a {type(value).__name__}, but this epoch the name was "
                    "first logged with a torchmetrics Metric; log one kind of value under a name"
                )
            if metric.source is not None:
                raise FulmenUserCodeError(
                    f"self.log({name!r}) got two different torchmetrics Metric objects in one epoch; "
                    "log each Metric under its own name"
                )
            metric.source = value  # the first log after a resume
        if metric.on_step:
            step = metric_objects.step_value(value)
            if step is None:
                return  # only update() ran this step: no batch value (as Lightning)
            step = detached_scalar(step, f"self.log({name!r})")
            self.step_values[name] = step
            self.callback_metrics[name] = step
            if metric.on_epoch:
                self.callback_metrics[name + "_step"] = step

    @staticmethod
    def _accumulate(metric: _Metric, value: torch.Tensor, size: float) -> None:
        value = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        if metric.reduce == "mean":
            contribution = value * size
            metric.total = contribution if metric.total is None else metric.total + contribution
            metric.weight += size
        elif metric.reduce == "sum":
            metric.total = value if metric.total is None else metric.total + value
            metric.weight += 1
        else:
            pick = torch.maximum if metric.reduce == "max" else torch.minimum
            metric.total = value if metric.total is None else pick(metric.total, value.to(metric.total.device))
            metric.weight += 1

    # ------------------------------------------------------------------ reading
    @property
    def batch_size(self) -> Optional[int]:
        """The current batch's size (dimension 0 of its first tensor), found on first use."""
        source = self._size_source
        if source is not _NO_BATCH:
            self._size_source = _NO_BATCH
            self._batch_size = first_batch_size(source)
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: Optional[int]) -> None:
        self._size_source = _NO_BATCH
        self._batch_size = value

    def start_batch(self, batch_size: Optional[int]) -> None:
        self.batch_size = batch_size
        if self.step_values:
            self.step_values = {}

    def start_batch_of(self, batch: Any) -> None:
        """``start_batch`` with the size read from ``batch`` only if a ``self.log`` needs it
        (an epoch-level mean without ``batch_size=``): most training steps never do."""
        self._size_source = batch
        if self.step_values:
            self.step_values = {}

    def settle_batch_size(self) -> None:
        """Read the pending size now and drop the reference to the batch."""
        self.batch_size  # noqa: B018 - the property does the work

    def step_metrics_for_loggers(self) -> Dict[str, float]:
        """Floats of this batch's on_step values (one host-device sync for all of them)."""
        names = [n for n in self.step_values if self._metrics[n].logger]
        if not names:
            return {}
        values = _to_floats([self.step_values[n] for n in names])
        out = {}
        for name, value in zip(names, values):
            out[name + "_step" if self._metrics[name].on_epoch else name] = value
        self.logged_metrics.update(out)
        self._update_progress_bar(names, values)
        return out

    def _update_progress_bar(self, names, values) -> None:
        for name, value in zip(names, values):
            metric = self._metrics[name]
            if metric.prog_bar:
                # Forked like the logger's name (Lightning): the epoch value goes under _epoch.
                self.progress_bar_metrics[name + "_step" if metric.on_epoch else name] = value

    def reduce_epoch(self, stage: str) -> Dict[str, float]:
        """Epoch values of ``stage``; fills callback metrics and returns the logger's floats."""
        names, tensors = [], []
        for name, metric in self._metrics.items():
            if metric.stage != stage or not metric.on_epoch:
                continue
            if metric.holds_object:
                if metric.source is not None:
                    names.append(name)
                    tensors.append(_computed(name, metric.source))
                continue
            if metric.total is None:
                continue
            total, weight = metric.total, metric.weight
            if metric.sync_dist:
                if metric.reduce == "mean":
                    pair = self._all_reduce(torch.stack([total.float(), torch.tensor(weight, device=total.device)]), "sum")
                    total, weight = pair[0], pair[1]
                else:
                    total = self._all_reduce(total, metric.reduce)
            value = total / weight if metric.reduce == "mean" else total
            names.append(name)
            tensors.append(value)
        if not names:
            return {}
        floats = _to_floats(tensors)
        logged: Dict[str, float] = {}
        for name, tensor, value in zip(names, tensors, floats):
            metric = self._metrics[name]
            key = name + "_epoch" if metric.on_step else name
            self.callback_metrics[name] = tensor
            self.callback_metrics[key] = tensor
            if metric.logger:
                logged[key] = value
            if metric.prog_bar:
                self.progress_bar_metrics[key] = value
        self.logged_metrics.update(logged)
        return logged

    def finish_epoch(self, stage: str) -> None:
        """Reset the torchmetrics Metrics logged in ``stage`` once its epoch values are out
        (Lightning resets them at the end of the epoch)."""
        for metric in self._metrics.values():
            if metric.stage == stage and metric.source is not None:
                metric.source.reset()

    def reset_stage(self, stage: str) -> None:
        """Forget accumulated values (and definitions) of ``stage`` at the start of an epoch."""
        self.finish_epoch(stage)  # an epoch that ended early (an exception) left states behind
        for name in [n for n, m in self._metrics.items() if m.stage == stage]:
            del self._metrics[name]

    def drop_stage_outputs(self, stage: str) -> None:
        """After a sanity check: its numbers must not look like real validation results."""
        self.finish_epoch(stage)  # nor may its batches count in the first validation's metrics
        for name in [n for n, m in self._metrics.items() if m.stage == stage]:
            del self._metrics[name]
            for key in (name, name + "_epoch", name + "_step"):
                self.callback_metrics.pop(key, None)
                self.progress_bar_metrics.pop(key, None)
                self.logged_metrics.pop(key, None)

    def metric_names(self) -> list:
        return sorted(self.callback_metrics)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, module: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
        """Plain data and tensors: the epoch accumulators, this batch's step values and what
        callbacks read (``callback_metrics``), so a resumed run logs the same epoch values
        and a ModelCheckpoint/EarlyStopping/ReduceLROnPlateau sees the last validation's.
        A logged torchmetrics Metric is saved as its attribute path in ``module`` (its
        states are saved by ``metric_objects.capture_states``)."""
        fields = ("stage", "prog_bar", "logger", "on_step", "on_epoch", "reduce", "sync_dist", "total", "weight", "holds_object")
        saved = {}
        found = None
        for name, m in self._metrics.items():
            saved[name] = {f: getattr(m, f) for f in fields}
            if m.source is not None:
                if found is None:
                    found = metric_objects.find_metrics(module) if module is not None else {}
                path = metric_objects.path_of(module, m.source, found)
                if path is None:
                    metric_objects.warn_not_in_module(name)
                saved[name]["source_path"] = path
        return {
            "metrics": saved,
            "step_values": dict(self.step_values),
            "callback_metrics": dict(self.callback_metrics),
            "logged_metrics": dict(self.logged_metrics),
            "progress_bar_metrics": dict(self.progress_bar_metrics),
        }

    def load_state_dict(self, state: Dict[str, Any], module: Optional[torch.nn.Module] = None) -> None:
        device = self._device_fn()
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        found = None
        self._metrics = {}
        for name, fields in state.get("metrics", {}).items():
            fields = dict(fields)
            path = fields.pop("source_path", None)
            record = _Metric(**{k: move(v) for k, v in fields.items()})
            if path is not None and module is not None:
                if found is None:
                    found = metric_objects.find_metrics(module)
                record.source = found.get(path)
            self._metrics[name] = record
        self.step_values = {k: move(v) for k, v in state.get("step_values", {}).items()}
        self.callback_metrics = {k: move(v) for k, v in state.get("callback_metrics", {}).items()}
        self.logged_metrics = dict(state.get("logged_metrics", {}))
        self.progress_bar_metrics = dict(state.get("progress_bar_metrics", {}))


def _computed(name: str, metric: Any) -> torch.Tensor:
    """``metric.compute()`` (torchmetrics syncs the ranks' states inside) as a scalar."""
    value = metric.compute()
    if not isinstance(value, torch.Tensor):
        raise FulmenUserCodeError(
            f"self.log({name!r}) logged a {type(metric).__name__} whose compute() returns a "
            f"{type(value).__name__}; self.log needs a scalar: log the entries you want with "
            "self.log_dict(metric.compute()) in an epoch-end hook"
        )
    return detached_scalar(value, f"self.log({name!r})")


def _to_floats(tensors) -> list:
    """One transfer for many scalars: stack on the device, then a single ``tolist``."""
    by_device: Dict[torch.device, list] = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    out = [0.0] * len(tensors)
    for device, indices in by_device.items():
        stacked = torch.stack([tensors[i].float() for i in indices])
        for i, value in zip(indices, stacked.tolist()):
            out[i] = value
    return out
