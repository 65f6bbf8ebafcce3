"""Deprecations go through pluggy's ``warn_on_impl`` and are listed in one module,
``fulmen.plugins.deprecations``; these tests list fake ones and check the warnings."""

from __future__ import annotations

import inspect
import warnings

import pytest
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.plugins import deprecations
from fulmen.plugins.deprecations import Deprecation, FulmenDeprecationWarning
from fulmen.plugins.manager import FulmenPluginManager


class UsesEpochStart(fulmen.Callback):
    def on_train_epoch_start(self, trainer):
        pass


class UsesOutputs(fulmen.Callback):
    def on_train_batch_end(self, outputs, batch_idx):
        pass


class UsesBatchIdxOnly(fulmen.Callback):
    def on_train_batch_end(self, batch_idx):
        pass


class PluginModuleLike:
    @fulmen.hookimpl
    def on_train_epoch_start(self):
        pass


@pytest.fixture
def fake_hook_deprecation(monkeypatch):
    monkeypatch.setitem(deprecations.DEPRECATED_HOOKS, "on_train_epoch_start",
                        Deprecation(since="0.2", removal="1.0", replacement="on_train_batch_start", reason="test"))


def test_implementing_a_deprecated_hook_warns_at_the_implementation(fake_hook_deprecation):
    pm = FulmenPluginManager()
    with pytest.warns(FulmenDeprecationWarning) as record:
        pm.register_carrier(UsesEpochStart(), "callback")
    assert len(record) == 1
    warning = record[0]
    assert str(warning.message) == ("the hook 'on_train_epoch_start' is deprecated since fulmen 0.2 and will be "
                                    "removed in fulmen 1.0; implement on_train_batch_start instead (test)")
    # Reported at the line that defines the implementation, so the author finds it at once.
    assert warning.filename == __file__
    assert warning.lineno == inspect.getsourcelines(UsesEpochStart.on_train_epoch_start)[1]


def test_plugin_objects_warn_too_and_other_hooks_do_not(fake_hook_deprecation):
    pm = FulmenPluginManager()
    with pytest.warns(FulmenDeprecationWarning, match="'on_train_epoch_start' is deprecated"):
        pm.register(PluginModuleLike())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm.register_carrier(UsesBatchIdxOnly(), "callback")


def test_deprecated_argument_warns_only_where_it_is_taken(monkeypatch):
    monkeypatch.setitem(deprecations.DEPRECATED_ARGUMENTS, ("on_train_batch_end", "outputs"),
                        Deprecation(since="0.3", removal="1.0", reason="read trainer.last_outputs"))
    pm = FulmenPluginManager()
    with pytest.warns(FulmenDeprecationWarning, match="the argument 'outputs' of the hook 'on_train_batch_end' is "
                                                      "deprecated since fulmen 0.3"):
        pm.register_carrier(UsesOutputs(), "callback")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm.register_carrier(UsesBatchIdxOnly(), "callback")


def test_a_trainer_warns_for_a_callback_using_a_deprecated_hook(fake_hook_deprecation, tmp_path):
    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False,
                            callbacks=[UsesEpochStart()])
    with pytest.warns(FulmenDeprecationWarning, match="on_train_epoch_start"):
        trainer.fit(BoringModule(), loader())
    assert trainer.global_step == 1  # a deprecation never stops training


def test_listing_a_hook_that_does_not_exist_is_caught(monkeypatch):
    monkeypatch.setitem(deprecations.DEPRECATED_HOOKS, "on_trian_start", Deprecation("0.2", "1.0"))
    with pytest.raises(AssertionError, match="lists hook 'on_trian_start', which fulmen.hookspecs does not define"):
        FulmenPluginManager()
