"""Values passed to ``Fabric.log`` stay on their device until a logging interval.

Reading a GPU tensor on the host (``.item()``) waits for every kernel queued before it, so
reading each value when it is logged would stall the loop once per call. Rows are kept
in order instead and read together, one transfer per device, every ``flush_every`` rows,
at ``Fabric.save``, at ``Fabric.flush_logs()``, when ``fabric.logger`` is reached and at
exit (followed by each logger's ``save()``). Rows without a device tensor (numbers, CPU
tensors, whose reading costs no sync) go out at once unless device rows are pending: the
loggers get every row in the order it was logged, and a CPU run sees each value at once.
"""

from __future__ import annotations

import atexit
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from fulmen.utilities.scalars import detached_scalar

# The Trainer's default log_every_n_steps: the same number of host syncs per step.
DEFAULT_FLUSH_EVERY = 50

Row = Tuple[Optional[int], Dict[str, Any]]


class DeferredMetrics:
    def __init__(self, loggers: Sequence[Any], flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        self._loggers = loggers
        self.flush_every = flush_every
        self._rows: List[Row] = []
        self._device_rows = 0
        # A strong reference: a Fabric built inside main() is gone by exit, its rows not.
        atexit.register(_flush_at_exit, self)

    def add(self, metrics: Dict[str, Any], step: Optional[int]) -> None:
        row: Dict[str, Any] = {}
        on_device = False
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = detached_scalar(value, f"fabric.log({name!r})")
                if not value.is_cpu:
                    # A copy, queued on the device (no sync): the loop may change the
                    # original in place (a running total) before the row is read.
                    value = value.clone()
                    on_device = True
            else:
                value = float(value)
            row[name] = value
        self._rows.append((step, row))
        if on_device:
            self._device_rows += 1
        if not self._device_rows or len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Read every pending value (one transfer per device) and hand the rows to the loggers."""
        rows, self._rows, self._device_rows = self._rows, [], 0
        if not rows:
            return
        for step, plain in _to_floats(rows):
            for logger in self._loggers:
                logger.log_metrics(plain, step=step)


def _to_floats(rows: List[Row]) -> List[Row]:
    by_device: Dict[torch.device, List[torch.Tensor]] = {}
    for _, row in rows:
        for value in row.values():
            if isinstance(value, torch.Tensor):
                by_device.setdefault(value.device, []).append(value.to(torch.float64))
    read = {device: iter(torch.stack(values).tolist()) for device, values in by_device.items()}
    out: List[Row] = []
    for step, row in rows:
        out.append((step, {k: next(read[v.device]) if isinstance(v, torch.Tensor) else v for k, v in row.items()}))
    return out


def _flush_at_exit(metrics: DeferredMetrics) -> None:
    if not metrics._rows:
        return
    try:
        metrics.flush()
        for logger in metrics._loggers:  # rows that arrived after the user's last save
            save = getattr(logger, "save", None)
            if callable(save):
                save()
    except Exception:  # the interpreter is going away; a logger may be closed already
        pass
