"""Without a profiler the loop takes its plain path: nothing profiler-related per step."""

from __future__ import annotations

from helpers import BoringModule, loader, quiet_trainer
from profiler_helpers import ProfiledModule

import fulmen
from fulmen.profilers import PassThroughProfiler, SimpleProfiler


class SpyProfiler(PassThroughProfiler):
    """Counts every call the Trainer makes; as a PassThroughProfiler it means "no profiler"."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def profile(self, action_name):
        self.calls.append(("profile", action_name))
        return super().profile(action_name)

    def start(self, action_name):
        self.calls.append(("start", action_name))

    def stop(self, action_name):
        self.calls.append(("stop", action_name))

    def setup(self, *args, **kwargs):
        self.calls.append(("setup", None))

    def describe(self):
        self.calls.append(("describe", None))


class PathInspector(fulmen.Callback):
    """Looks, during the run, at what the loop will call next step."""

    def __init__(self) -> None:
        self.seen = []

    def on_train_batch_end(self, trainer):
        relay_functions = [function for function, _ in trainer._relay._direct["on_train_batch_end"]]
        self.seen.append((
            set(vars(trainer)) & {"_step", "_train_iterator"},
            set(vars(trainer.strategy)) & {"backward", "optimizer_step", "zero_grad"},
            [getattr(f, "__self__", None) is self for f in relay_functions],
        ))


def _fit(tmp_path, profiler, epochs=2):
    inspector = PathInspector()
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, callbacks=[inspector], logger=False, enable_checkpointing=False)
    if profiler is not None:
        trainer.profiler = profiler
    trainer.fit(BoringModule(), loader(32, batch_size=8), loader(16, batch_size=8))
    return trainer, inspector


def test_no_profiler_call_per_step(tmp_path):
    spy = SpyProfiler()
    _, inspector = _fit(tmp_path, spy)
    assert len(inspector.seen) == 8  # 2 epochs of 4 batches ran
    # One no-op context per epoch is all: nothing scales with the number of batches.
    assert spy.calls == [("profile", "run_training_epoch")] * 2


def test_no_profiler_leaves_the_loop_calling_plain_methods(tmp_path):
    _, inspector = _fit(tmp_path, None, epochs=1)
    assert inspector.seen == [(set(), set(), [True])] * 4


def test_a_profiler_shadows_the_per_step_methods_only_during_its_run(tmp_path):
    trainer, inspector = _fit(tmp_path, SimpleProfiler(), epochs=1)
    shadowed_trainer, shadowed_strategy, plain_hooks = inspector.seen[0]
    assert shadowed_trainer == {"_step", "_train_iterator"}
    assert shadowed_strategy == {"backward", "optimizer_step", "zero_grad"}
    assert plain_hooks == [False]  # the callback's hook is called through its timer
    # Afterwards the next run without a profiler is plain again.
    trainer.profiler = PassThroughProfiler()
    trainer.fit(ProfiledModule(), loader(16, batch_size=8))
    assert not set(vars(trainer)) & {"_step", "_train_iterator"}
    assert not set(vars(trainer.strategy)) & {"backward", "optimizer_step", "zero_grad"}
    assert inspector.seen[-1] == (set(), set(), [True])
