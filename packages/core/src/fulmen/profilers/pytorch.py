"""``PyTorchProfiler``: ``torch.profiler`` over the run, each action a ``record_function``.

torch's profiler sees operators and kernels, not the loop; recording every action as a
``record_function`` range puts the two together: the key-averages table lists the
actions beside the operators they ran, and the chrome trace nests operators under them.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Dict, List, Optional, Union

from fulmen.errors import FulmenConfigError
from fulmen.profilers.base import Profiler

# Attributes of torch's averaged events the table can be sorted by ("cuda" reads "device").
SORT_KEYS = frozenset({
    "cpu_time", "cuda_time", "device_time", "cpu_time_total", "cuda_time_total", "device_time_total",
    "self_cpu_time_total", "self_cuda_time_total", "self_device_time_total", "cpu_memory_usage",
    "cuda_memory_usage", "device_memory_usage", "self_cpu_memory_usage", "self_cuda_memory_usage",
    "self_device_memory_usage", "count",
})
# Actions after which a ``schedule=`` advances by one step (torch's profiler.step()).
STEP_ACTIONS = (".training_step", ".validation_step", ".test_step", ".predict_step")


class PyTorchProfiler(Profiler):
    """Profiles the run with ``torch.profiler.profile`` and reports its key-averages table.

    Args:
        dirpath, filename: where the report goes (see ``fulmen.profilers.Profiler``); the
            chrome trace is written beside it as ``{stage}-{filename}[-{rank}].pt.trace.json``
            (``filename`` ``None``: ``trace``).
        group_by_input_shapes: one table row per operator and input shape (records shapes).
        emit_nvtx: mark the actions as NVTX ranges for ``nsys`` instead of profiling (CUDA).
        export_to_chrome: write the chrome trace (open it in ``chrome://tracing`` or Perfetto).
        row_limit: rows of the table (``-1``: all).
        sort_by_key: the table's order; default ``cuda_time_total`` when CUDA is profiled,
            else ``cpu_time_total``.
        record_module_names: a range per submodule's forward, named after the submodule.
        **profiler_kwargs: passed to ``torch.profiler.profile`` (``activities``,
            ``schedule``, ``on_trace_ready``, ``record_shapes``, ``profile_memory``,
            ``with_stack``, ...). With a ``schedule``, it advances after each ``*_step``.
    """

    def __init__(
        self,
        dirpath: Optional[Union[str, os.PathLike]] = None,
        filename: Optional[str] = None,
        group_by_input_shapes: bool = False,
        emit_nvtx: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: Optional[str] = None,
        record_module_names: bool = True,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        import torch.profiler

        accepted = set(inspect.signature(torch.profiler.profile.__init__).parameters) - {"self"}
        unknown = sorted(set(profiler_kwargs) - accepted)
        if unknown:
            raise FulmenConfigError(
                f"PyTorchProfiler got {unknown}, which torch.profiler.profile does not take; "
                f"it takes {sorted(accepted)}"
            )
        if sort_by_key is not None and sort_by_key not in SORT_KEYS:
            raise FulmenConfigError(f"sort_by_key={sort_by_key!r}; use one of {sorted(SORT_KEYS)}")
        if not isinstance(row_limit, int) or isinstance(row_limit, bool) or row_limit == 0 or row_limit < -1:
            raise FulmenConfigError(f"row_limit={row_limit!r} must be a positive row count or -1 for all rows")
        self.group_by_input_shapes = group_by_input_shapes
        self.emit_nvtx = emit_nvtx
        self.export_to_chrome = export_to_chrome
        self.row_limit = row_limit
        self.sort_by_key = sort_by_key
        self.record_module_names = record_module_names
        profiler_kwargs.setdefault("record_shapes", group_by_input_shapes)
        self.profiler_kwargs = profiler_kwargs
        self.profiler: Any = None  # the running torch profiler (or NVTX emitter)
        self._recordings: Dict[str, Any] = {}
        self._module: Any = None
        self._module_hooks: List[Any] = []
        self.chrome_trace_path: Optional[str] = None  # set when the trace is written

    # ------------------------------------------------------------------ lifecycle
    def setup(self, stage: Optional[str] = None, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        super().setup(stage=stage, local_rank=local_rank, log_dir=log_dir)
        if self.emit_nvtx:
            import torch

            if not torch.cuda.is_available():
                raise FulmenConfigError("PyTorchProfiler(emit_nvtx=True) marks CUDA ranges for nsys and needs a CUDA device")

    def _attach_module(self, module: Any) -> None:
        """Called by the Trainer with the module it runs: with ``record_module_names`` each
        submodule's forward becomes a range named ``[module]Class: name``."""
        self._module = module
        if self.record_module_names and not self._module_hooks and module is not None:
            self._register_module_ranges(module)

    def _register_module_ranges(self, module: Any) -> None:
        from torch.autograd.profiler import record_function

        open_ranges: Dict[int, List[Any]] = {}

        def before(submodule, _inputs, label):
            if self.profiler is None:
                return
            scope = record_function(label)
            scope.__enter__()
            open_ranges.setdefault(id(submodule), []).append(scope)

        def after(submodule, _inputs, _output):
            stack = open_ranges.get(id(submodule))
            if stack:
                stack.pop().__exit__(None, None, None)

        for name, submodule in module.named_modules():
            if not name:
                continue
            label = f"[module]{type(submodule).__module__}.{type(submodule).__name__}: {name}"
            self._module_hooks.append(submodule.register_forward_pre_hook(lambda m, i, label=label: before(m, i, label)))
            self._module_hooks.append(submodule.register_forward_hook(after))

    def _start_profiler(self) -> None:
        import torch

        if self.emit_nvtx:
            self.profiler = torch.autograd.profiler.emit_nvtx(record_shapes=self.profiler_kwargs["record_shapes"])
        else:
            self.profiler = torch.profiler.profile(**self.profiler_kwargs)
        self.profiler.__enter__()

    # ------------------------------------------------------------------ actions
    def start(self, action_name: str) -> None:
        if action_name in self._recordings:
            raise ValueError(f"profiler action {action_name!r} was started again before it was stopped")
        if self.profiler is None:
            self._start_profiler()
        from torch.autograd.profiler import record_function

        recording = record_function(action_name)
        recording.__enter__()
        self._recordings[action_name] = recording

    def stop(self, action_name: str) -> None:
        recording = self._recordings.pop(action_name, None)
        if recording is None:
            raise ValueError(f"profiler action {action_name!r} was stopped but never started")
        recording.__exit__(None, None, None)
        if "schedule" in self.profiler_kwargs and action_name.endswith(STEP_ACTIONS) and not self.emit_nvtx:
            self.profiler.step()

    # ------------------------------------------------------------------ report
    def summary(self) -> str:
        profiler = self.profiler
        if profiler is None or self.emit_nvtx:
            return ""
        for recording in reversed(list(self._recordings.values())):
            recording.__exit__(None, None, None)
        self._recordings = {}
        profiler.__exit__(None, None, None)
        self.profiler = None
        if self.export_to_chrome and "on_trace_ready" not in self.profiler_kwargs:
            path = self._output_path(".pt.trace.json", filename=self.filename or "trace")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            profiler.export_chrome_trace(path)
            self.chrome_trace_path = path
        try:
            averages = profiler.key_averages(group_by_input_shape=self.group_by_input_shapes)
        except AssertionError:  # a schedule ended before any active step: no events
            return ""
        table = averages.table(sort_by=self.sort_by_key or self._default_sort_key(), row_limit=self.row_limit)
        return self._report_title() + "\n\n" + table

    def _default_sort_key(self) -> str:
        import torch

        activities = self.profiler_kwargs.get("activities")
        cuda = torch.profiler.ProfilerActivity.CUDA
        uses_cuda = cuda in activities if activities is not None else torch.cuda.is_available()
        return "cuda_time_total" if uses_cuda else "cpu_time_total"

    def teardown(self, stage: Optional[str] = None) -> None:
        if self.profiler is not None:  # a report that was never asked for
            for recording in reversed(list(self._recordings.values())):
                recording.__exit__(None, None, None)
            self._recordings = {}
            self.profiler.__exit__(None, None, None)
            self.profiler = None
        for handle in self._module_hooks:
            handle.remove()
        self._module_hooks = []
        self._module = None
