"""Trainer(profiler=...): names through the registry, instances, plugins, bad input."""

from __future__ import annotations

import pytest
from helpers import loader, quiet_trainer
from profiler_helpers import STEP, ProfiledModule, read, simple_rows

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.profilers import AdvancedProfiler, PassThroughProfiler, PyTorchProfiler, SimpleProfiler


@pytest.mark.parametrize("name, cls", [("simple", SimpleProfiler), ("advanced", AdvancedProfiler), ("pytorch", PyTorchProfiler)])
def test_built_in_names(tmp_path, name, cls):
    assert type(quiet_trainer(tmp_path, profiler=name).profiler) is cls


def test_an_instance_is_used_as_is(tmp_path):
    profiler = SimpleProfiler(filename="x")
    assert quiet_trainer(tmp_path, profiler=profiler).profiler is profiler


def test_unknown_name_lists_the_registered_profilers(tmp_path):
    with pytest.raises(FulmenConfigError, match=r"unknown profiler 'fancy'\. Available: 'advanced', 'pytorch', 'simple'"):
        quiet_trainer(tmp_path, profiler="fancy")


@pytest.mark.parametrize("bad", [True, 3, SimpleProfiler])
def test_anything_else_is_a_clear_error(tmp_path, bad):
    with pytest.raises(FulmenConfigError, match=r"profiler=.*pass None \(no profiling\), a registered name \('advanced'"):
        quiet_trainer(tmp_path, profiler=bad)


class CountingProfiler(SimpleProfiler):
    """A third party's profiler: here a SimpleProfiler writing its own file name."""

    def __init__(self) -> None:
        super().__init__(filename="acme")


class AcmePlugin:
    @fulmen.hookimpl
    def register_profilers(self, register):
        register("acme", CountingProfiler, "Acme's profiler")
        register("acme_broken", lambda: object(), "returns something that is not a profiler")


def test_a_third_party_profiler_is_chosen_by_name(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler="acme", plugins=[AcmePlugin()], logger=False,
                            enable_checkpointing=False)
    assert trainer.fabric.registry.get("profiler", "acme").description == "Acme's profiler"
    trainer.fit(ProfiledModule(), loader(24, batch_size=8))
    assert simple_rows(read(tmp_path / "fit-acme.txt"))[STEP]["Num calls"] == "3"


def test_a_factory_that_builds_no_profiler_is_named(tmp_path):
    with pytest.raises(FulmenConfigError, match=r"profiler 'acme_broken' \(registered by plugin .*\) built a object"):
        quiet_trainer(tmp_path, profiler="acme_broken", plugins=[AcmePlugin()])


def test_default_is_the_pass_through_profiler_and_user_code_still_runs(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    assert type(trainer.profiler) is PassThroughProfiler
    trainer.fit(ProfiledModule(), loader(16, batch_size=8))  # with self.trainer.profiler.profile("custom")
    assert trainer.global_step == 2
    assert not list(tmp_path.rglob("*.txt"))
