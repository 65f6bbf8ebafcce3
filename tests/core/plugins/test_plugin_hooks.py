"""Hook plumbing seen from user code: one plugin manager per Trainer, and hook
implementations that take any subset of the documented arguments (and only those)."""

from __future__ import annotations

import pytest
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.errors import FulmenUserCodeError


class Recorder(fulmen.Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("on_fit_start", trainer))

    def on_train_batch_end(self, trainer, batch_idx):
        self.calls.append(("on_train_batch_end", trainer, batch_idx))


def _trainer(tmp_path, **kwargs):
    kwargs.setdefault("max_steps", 3)
    return quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, num_sanity_val_steps=0, **kwargs)


# ---------------------------------------------------------------------------- isolation

def test_two_trainers_in_one_process_do_not_share_callbacks(tmp_path):
    only_a, only_b = Recorder(), Recorder()
    trainer_a = _trainer(tmp_path / "a", callbacks=[only_a])
    trainer_b = _trainer(tmp_path / "b", callbacks=[only_b], max_steps=2)
    assert trainer_a.fabric.plugin_manager is not trainer_b.fabric.plugin_manager
    assert trainer_a.fabric.registry is not trainer_b.fabric.registry

    trainer_b.fit(BoringModule(), loader())
    assert only_a.calls == []
    assert [c[0] for c in only_b.calls] == ["on_fit_start"] + ["on_train_batch_end"] * 2
    assert all(c[1] is trainer_b for c in only_b.calls)

    trainer_a.fit(BoringModule(), loader())
    assert [c[0] for c in only_a.calls] == ["on_fit_start"] + ["on_train_batch_end"] * 3
    assert all(c[1] is trainer_a for c in only_a.calls)
    assert len(only_b.calls) == 3  # B's callback did not hear A's fit


def test_interleaved_fits_keep_hooks_apart(tmp_path):
    """A module moved from one Trainer to the next is only called by the one fitting it."""
    seen = []

    class Watched(BoringModule):
        def on_train_start(self, trainer):
            seen.append(trainer)

    module = Watched()
    trainer_a, trainer_b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    trainer_a.fit(module, loader())
    trainer_b.fit(module, loader())
    assert seen == [trainer_a, trainer_b]
    # After a fit nothing of the run stays registered with that trainer's manager.
    assert module not in trainer_a.fabric.plugin_manager.get_plugins()
    assert module not in trainer_b.fabric.plugin_manager.get_plugins()


def test_plugin_objects_given_to_one_trainer_stay_with_it(tmp_path):
    class LocalPlugin:
        def __init__(self):
            self.train_starts = 0

        @fulmen.hookimpl
        def register_strategies(self, register):
            from fulmen.strategies import SingleDeviceStrategy

            register("local_only", SingleDeviceStrategy, "registered by an object in plugins=")

        @fulmen.hookimpl
        def on_train_start(self, trainer):
            self.train_starts += 1

    plugin = LocalPlugin()
    with_plugin = _trainer(tmp_path / "a", plugins=[plugin], strategy="local_only")
    without = _trainer(tmp_path / "b")
    assert "local_only" in with_plugin.fabric.registry.names("strategy")
    assert "local_only" not in without.fabric.registry.names("strategy")
    without.fit(BoringModule(), loader())
    assert plugin.train_starts == 0
    with_plugin.fit(BoringModule(), loader())
    assert plugin.train_starts == 1


# ---------------------------------------------------------------------------- argument subsets

def test_hooks_may_take_any_subset_of_their_arguments(tmp_path):
    class Subsets(fulmen.Callback):
        def __init__(self):
            self.batch_indices, self.outputs, self.bare = [], [], 0

        def on_train_batch_end(self, batch_idx):  # no trainer, no module
            self.batch_indices.append(batch_idx)

        def on_before_backward(self, loss, module):  # any order, by name
            self.outputs.append((float(loss.detach()), isinstance(module, BoringModule)))

        def on_train_end(self):  # no arguments at all
            self.bare += 1

    callback = Subsets()
    _trainer(tmp_path, callbacks=[callback]).fit(BoringModule(), loader())
    assert callback.batch_indices == [0, 1, 2]
    assert len(callback.outputs) == 3 and all(is_module for _, is_module in callback.outputs)
    assert callback.bare == 1


def test_callback_hook_with_an_undocumented_argument_is_a_user_code_error(tmp_path):
    class LightningStyle(fulmen.Callback):
        # Read as Lightning's positional style (pl_module is no documented name), but it takes
        # 3 of the 5 arguments: batch_idx would silently receive ``outputs``.
        def on_train_batch_end(self, trainer, pl_module, batch_idx):
            raise AssertionError("must never be called")

    trainer = _trainer(tmp_path, callbacks=[LightningStyle()])  # constructing is fine ...
    with pytest.raises(FulmenUserCodeError) as excinfo:  # ... fit explains the mistake
        trainer.fit(BoringModule(), loader())
    message = str(excinfo.value)
    assert "callback" in message
    assert "LightningStyle" in message
    assert "on_train_batch_end" in message
    assert "pl_module" in message
    assert "fulmen.hookspecs" in message  # points at where the arguments are documented


def test_module_hook_with_an_undocumented_argument_is_a_user_code_error(tmp_path):
    class BadModule(BoringModule):
        def on_train_start(self, trainer, pl_module):
            raise AssertionError("must never be called")

    with pytest.raises(FulmenUserCodeError, match=r"(?s)module .*BadModule.*on_train_start.*pl_module"):
        _trainer(tmp_path).fit(BadModule(), loader())


def test_a_failed_attach_leaves_nothing_registered_for_the_next_fit(tmp_path):
    starts = []

    class Counted(BoringModule):
        def on_train_start(self, trainer):
            starts.append(self)

    class LightningStyle(fulmen.Callback):
        def on_fit_start(self, trainer, pl_module, extra):  # one more than Lightning passes
            pass

    good, bad = Recorder(), LightningStyle()
    trainer = _trainer(tmp_path, callbacks=[good, bad])
    first = Counted()
    with pytest.raises(FulmenUserCodeError):
        trainer.fit(first, loader())
    assert good.calls == [] and starts == []

    trainer.callbacks.remove(bad)
    second = Counted()
    trainer.fit(second, loader())
    assert starts == [second]  # the module of the failed fit is not called again
    assert [c[0] for c in good.calls] == ["on_fit_start"] + ["on_train_batch_end"] * 3
