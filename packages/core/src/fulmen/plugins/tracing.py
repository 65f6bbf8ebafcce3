"""``FULMEN_TRACE_PLUGINS=1``: log every hook call, the implementations it ran, in the order
they ran, and how long each took; for debugging the order between plugins and callbacks.

Values: ``1``/``true``/``stderr`` write to stderr; ``log``/``logging`` only emit records on
the ``fulmen.plugins.trace`` logger (configure handlers yourself); anything else is a file
path that lines are appended to (handy with several ranks: include ``{rank}`` in the path,
e.g. ``FULMEN_TRACE_PLUGINS=/tmp/trace-{rank}.log``). A line looks like::

    fulmen.trace on_train_batch_end 0.084ms: callback:BatchCounter 0.012ms, module:MyModule 0.031ms, acme 0.004ms

The call is watched with pluggy's ``add_hookcall_monitoring``; to time each implementation
on its own, the ``before`` callback swaps the implementations of that one call for timed
copies. Tracing costs time per hook call, which is why it is off unless asked for; while it
is on, the Trainer's hook relay calls through pluggy instead of its direct fast path.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

ENV_TRACE = "FULMEN_TRACE_PLUGINS"
LOGGER_NAME = "fulmen.plugins.trace"
logger = logging.getLogger(LOGGER_NAME)

_handler_lock = threading.Lock()
_handler_target: Optional[str] = None


def trace_setting() -> Optional[str]:
    value = os.environ.get(ENV_TRACE, "").strip()
    if value.lower() in ("", "0", "false", "no", "off"):
        return None
    return value


class _TimedImpl:
    """Stands in for a pluggy ``HookImpl`` for one call, timing its function."""

    __slots__ = ("argnames", "kwargnames", "function", "hookwrapper", "wrapper", "plugin", "plugin_name",
                 "opts", "tryfirst", "trylast", "optionalhook")

    def __init__(self, impl: Any, timings: List[tuple]) -> None:
        for name in self.__slots__:
            if name != "function":
                setattr(self, name, getattr(impl, name, None))
        function = impl.function
        label = display_name(impl)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings.append((label, time.perf_counter() - start))

        self.function = timed


def display_name(impl: Any) -> str:
    """A readable name for the plugin of one implementation: ``callback:BatchCounter``
    (without the id that tells instances apart inside the manager), an entry point's name
    (``acme``), ``fulmen`` for the built-ins, or the class/module of an object passed in
    ``plugins=`` (pluggy names those by their id)."""
    name = impl.plugin_name
    parts = name.split(":")
    if len(parts) == 3 and parts[2].isdigit():
        return ":".join(parts[:2])
    if name.isdigit():
        plugin = impl.plugin
        label = getattr(plugin, "__name__", None) if isinstance(plugin, type(sys)) else None
        return f"plugin:{label or type(plugin).__qualname__}"
    return name


class HookTracer:
    """Monitors one plugin manager; ``emit`` receives each finished call's line."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self._calls: List[Dict[str, Any]] = []

    def before(self, hook_name: str, hook_impls: Sequence[Any], kwargs: Dict[str, Any]) -> None:
        timings: List[tuple] = []
        wrappers = []
        if isinstance(hook_impls, list):
            for i, impl in enumerate(hook_impls):
                if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
                    wrappers.append(display_name(impl))
                    continue  # a wrapper's own time is its generator's, spread around the call
                hook_impls[i] = _TimedImpl(impl, timings)
        self._calls.append({"timings": timings, "wrappers": wrappers, "start": time.perf_counter()})

    def after(self, outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Dict[str, Any]) -> None:
        call = self._calls.pop()
        total = time.perf_counter() - call["start"]
        # pluggy runs the implementations last-registered first; ``timings`` is in run order.
        parts = [f"{name} {seconds * 1e3:.3f}ms" for name, seconds in call["timings"]]
        parts += [f"{name} (wrapper)" for name in call["wrappers"]]
        failed = getattr(outcome, "exception", None)
        status = f" raised {type(failed).__name__}" if failed is not None else ""
        self.emit(f"fulmen.trace {hook_name} {total * 1e3:.3f}ms{status}: " + (", ".join(parts) or "no implementation"))


def install(manager: Any, setting: Optional[str] = None) -> Optional[Callable[[], None]]:
    """Trace ``manager`` when ``FULMEN_TRACE_PLUGINS`` (or ``setting``) asks for it; returns
    the undo function, or None when tracing is off."""
    setting = trace_setting() if setting is None else setting
    if not setting:
        return None
    _configure_output(setting)
    tracer = HookTracer(lambda line: logger.info(line))
    plain = manager._inner_hookexec
    undo = manager.add_hookcall_monitoring(tracer.before, tracer.after)
    # Tells the Trainer's relay which call path is pluggy's own (it must not bypass tracing).
    manager._fulmen_untraced_hookexec = plain
    manager._fulmen_tracer = tracer
    return undo


def call_registration(manager: Any, hook_name: str, impl: Any, register: Callable[..., None]) -> None:
    """Run one plugin's registration hook (the manager calls each on its own, to attribute
    every name); when tracing, log it like any other hook call."""
    tracer = getattr(manager, "_fulmen_tracer", None)
    if tracer is None:
        impl.function(*[register for _ in impl.argnames])
        return
    start = time.perf_counter()
    impl.function(*[register for _ in impl.argnames])
    seconds = time.perf_counter() - start
    tracer.emit(f"fulmen.trace {hook_name} {seconds * 1e3:.3f}ms: {display_name(impl)} {seconds * 1e3:.3f}ms")


class _RankFileHandler(logging.Handler):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def emit(self, record: logging.LogRecord) -> None:
        rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
        try:
            with open(self.pattern.replace("{rank}", rank), "a") as handle:
                handle.write(self.format(record) + "\n")
        except OSError:
            self.handleError(record)


def _configure_output(setting: str) -> None:
    """One handler per process for the chosen target (several managers share it)."""
    global _handler_target
    with _handler_lock:
        if _handler_target == setting:
            return
        for handler in list(logger.handlers):
            if getattr(handler, "_fulmen_trace", False):
                logger.removeHandler(handler)
        logger.setLevel(logging.INFO)
        lowered = setting.lower()
        if lowered in ("log", "logging"):
            logger.propagate = True
        else:
            handler: logging.Handler
            if lowered in ("1", "true", "yes", "on", "stderr"):
                handler = _StderrHandler()
            else:
                handler = _RankFileHandler(setting)
            handler._fulmen_trace = True  # type: ignore[attr-defined]
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
        _handler_target = setting


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (pytest and users may replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
