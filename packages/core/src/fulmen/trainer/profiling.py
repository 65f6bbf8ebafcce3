"""Profiling a Trainer stage: the instrumented code path is chosen once, when a stage starts.

Without a profiler (``Trainer(profiler=None)``) nothing here runs per step, not even a no-op
context manager: the loop calls the same bound methods it always does. With one, the few
methods the loop calls per step (the strategy's ``backward``, ``optimizer_step`` and
``zero_grad``, the Trainer's step dispatch and batch iterator) are shadowed on the instances
by timed versions for the length of the stage, and the hook relay times each
implementation. Shadowing instance attributes keeps every timing out of the loop's source,
so the loop reads the same with or without profiling, and ``finish`` puts the plain
methods back.

Action names are Lightning's, because users grep reports and dashboards for them:
``[Strategy]SingleDeviceStrategy.training_step``, ``[Strategy]...backward``,
``[_TrainingEpochLoop].train_dataloader_next``, ``[_EvaluationLoop].val_next``,
``[Callback]ModelCheckpoint.on_validation_end``, ``[LightningModule]MyModule.on_train_start``
(a ``fulmen.Module`` is reported as Lightning reports a LightningModule) and
``run_training_epoch``. Two differences: callbacks are named by class, not by
``state_key``, and the optimizer step and ``zero_grad`` are the strategy's
(``[Strategy]X.optimizer_step``, ``[Strategy]X.zero_grad``), since fulmen's Module has no
``optimizer_step`` hook to name them after.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, List, Tuple

from fulmen.errors import FulmenConfigError
from fulmen.profilers.base import PassThroughProfiler, Profiler

TRAIN_FETCH = "[_TrainingEpochLoop].train_dataloader_next"
EVAL_FETCH = {
    "validate": "[_EvaluationLoop].val_next",
    "sanity": "[_EvaluationLoop].val_next",
    "test": "[_EvaluationLoop].test_next",
    "predict": "[_PredictionLoop].predict_next",
}
_HOOK_OWNERS = {"callback": "[Callback]", "module": "[LightningModule]", "datamodule": "[LightningDataModule]"}


def resolve_profiler(value: Any, registry) -> Profiler:
    """``None`` → the pass-through profiler; a name → the registry's; a ``Profiler`` as is."""
    if value is None:
        return PassThroughProfiler()
    if isinstance(value, str):
        profiler = registry.create("profiler", value)  # unknown names list what exists
        if not isinstance(profiler, Profiler):
            entry = registry.get("profiler", value)
            raise FulmenConfigError(
                f"profiler {value!r} (registered by plugin {entry.plugin!r}) built a "
                f"{type(profiler).__name__}, not a fulmen.profilers.Profiler; its factory must return one"
            )
        return profiler
    if isinstance(value, Profiler):
        return value
    names = ", ".join(repr(n) for n in registry.names("profiler"))
    raise FulmenConfigError(
        f"profiler={value!r}: pass None (no profiling), a registered name ({names}) or a "
        "fulmen.profilers.Profiler instance such as SimpleProfiler(filename='perf')"
    )


def start(trainer, stage: str) -> None:
    """Set the profiler up for ``stage`` and switch the stage to the timed code path."""
    profiler = trainer.profiler
    if isinstance(profiler, PassThroughProfiler):
        return
    local_rank = trainer.local_rank if trainer.world_size > 1 else None
    profiler.setup(stage=stage, local_rank=local_rank, log_dir=trainer.log_dir)
    instrumentation = _Instrumentation(trainer, profiler)
    trainer._profiling = instrumentation
    instrumentation.install()


def finish(trainer) -> None:
    """Back to the plain code path, then the report (``describe``) of the stage."""
    instrumentation = trainer._profiling
    if instrumentation is None:
        return
    trainer._profiling = None
    try:
        instrumentation.remove()
    finally:
        instrumentation.profiler.describe()


class _Instrumentation:
    def __init__(self, trainer, profiler: Profiler) -> None:
        self.trainer = trainer
        self.profiler = profiler
        self._shadowed: List[Tuple[Any, str, bool, Any]] = []  # (object, name, had own, own value)

    def install(self) -> None:
        trainer, profile = self.trainer, self.profiler.profile
        strategy = trainer.strategy
        owner = f"[Strategy]{type(strategy).__name__}"
        for name in ("backward", "zero_grad"):
            self._shadow(strategy, name, _timed(getattr(strategy, name), profile, f"{owner}.{name}"))
        self._shadow(strategy, "optimizer_step", _timed(strategy.optimizer_step, profile, f"{owner}.optimizer_step", steps_only=True))
        step = trainer._step
        step_actions = {}

        def timed_step(step_name: str, *args: Any) -> Any:
            action = step_actions.get(step_name)
            if action is None:
                action = step_actions[step_name] = f"{owner}.{step_name}"
            with profile(action):
                return step(step_name, *args)

        self._shadow(trainer, "_step", timed_step)
        train_iterator = trainer._train_iterator
        self._shadow(trainer, "_train_iterator", lambda start: _TimedIterator(train_iterator(start), self.profiler, TRAIN_FETCH))
        trainer._relay.instrument(self._time_hook)
        attach_module = getattr(self.profiler, "_attach_module", None)  # PyTorchProfiler's module ranges
        if callable(attach_module):
            attach_module(trainer.module)

    def remove(self) -> None:
        self.trainer._relay.instrument(None)
        for obj, name, had_own, value in reversed(self._shadowed):
            if had_own:
                setattr(obj, name, value)
            else:
                delattr(obj, name)
        self._shadowed = []

    def eval_loaders(self, stage: str, loaders: List[Any]) -> List[Any]:
        """The evaluation loop's loaders, each batch fetch timed (asked once per evaluation)."""
        action = EVAL_FETCH.get(stage, f"[_EvaluationLoop].{stage}_next")
        return [_TimedIterable(loader, self.profiler, action) for loader in loaders]

    def _shadow(self, obj: Any, name: str, replacement: Any) -> None:
        own = vars(obj)
        self._shadowed.append((obj, name, name in own, own.get(name)))
        setattr(obj, name, replacement)

    def _time_hook(self, hook: str, impl: Any, function: Callable[..., Any]) -> Callable[..., Any]:
        action = _hook_action(hook, impl)
        profile = self.profiler.profile

        def timed(*args: Any, **kwargs: Any) -> Any:
            with profile(action):
                return function(*args, **kwargs)

        return timed


def _hook_action(hook: str, impl: Any) -> str:
    if impl is None:
        return f"[Hook]{hook}"  # pluggy's path: all implementations of the hook together
    what, _, _ = impl.plugin_name.partition(":")
    prefix = _HOOK_OWNERS.get(what)
    if prefix is None:
        return f"[Plugin]{impl.plugin_name}.{hook}"
    user_object = getattr(impl.plugin, "carrier", impl.plugin)  # an adapter speaks for its object
    return f"{prefix}{type(user_object).__name__}.{hook}"


def _timed(method: Callable[..., Any], profile, action: str, steps_only: bool = False) -> Callable[..., Any]:
    """``steps_only`` (optimizer_step): between accumulation boundaries the loop only tells
    the strategy that a micro-batch went by (``boundary=False``) and nothing steps, so only
    real steps are timed."""

    # functools.wraps keeps the signature visible: the Trainer inspects optimizer_step's
    # parameters (``boundary``) after this is installed.
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if steps_only and kwargs.get("boundary", True) is False:
            return method(*args, **kwargs)
        with profile(action):
            return method(*args, **kwargs)

    return timed


class _TimedIterator:
    def __init__(self, iterator: Iterator[Any], profiler: Profiler, action: str) -> None:
        self._iterator = iterator
        self._profiler = profiler
        self._action = action

    def __iter__(self) -> "_TimedIterator":
        return self

    def __next__(self) -> Any:
        with self._profiler.profile(self._action):
            return next(self._iterator)


class _TimedIterable:
    def __init__(self, iterable: Iterable[Any], profiler: Profiler, action: str) -> None:
        self._iterable = iterable
        self._profiler = profiler
        self._action = action

    def __iter__(self) -> _TimedIterator:
        return _TimedIterator(iter(self._iterable), self._profiler, self._action)
