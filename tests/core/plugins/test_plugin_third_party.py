"""A third-party plugin, packaged and pip-installed the way a user would ship one.

The package ``fulmen-acme`` lives in its own ``pyproject.toml``, declares an entry point in
the ``fulmen.plugins`` group and, through ``@fulmen.hookimpl``, registers a strategy and a
callback. It is installed with pip into a directory that only the subprocesses of these
tests see, so the venv stays as it was. A second build of the same package requires
``fulmen>=99`` and must be reported as incompatible without being imported.
"""

from __future__ import annotations

import textwrap

import pytest
from plugin_helpers import last_json_line, pip_install, plugins_json, run_python

from fulmen.cli import main as fulmen_cli

PLUGIN_MODULE = '''
"""fulmen-acme's entry point. Import-light: the classes are imported inside the hooks."""

import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen_acme.impl import CountingStrategy

    register("acme_counting", CountingStrategy, "one device; counts optimizer steps")


@fulmen.hookimpl
def register_callbacks(register):
    from fulmen_acme.impl import BatchCounter

    register("acme_batches", BatchCounter, "counts training batches")
'''

IMPL_MODULE = '''
import fulmen
from fulmen.strategies import SingleDeviceStrategy


class CountingStrategy(SingleDeviceStrategy):
    name = "acme_counting"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.optimizer_steps = 0

    def optimizer_step(self, optimizer, closure=None):
        self.optimizer_steps += 1
        return super().optimizer_step(optimizer, closure)


class BatchCounter(fulmen.Callback):
    def __init__(self):
        self.batches = 0
        self.strategy_seen = None

    def on_fit_start(self, trainer):
        self.strategy_seen = type(trainer.strategy).__name__

    def on_train_batch_end(self, trainer, batch_idx):
        self.batches += 1
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fulmen-acme"
version = "2.0.0"
description = "a third-party fulmen plugin used by fulmen's tests"
requires-python = ">=3.10"
dependencies = ["{requirement}"]

[project.entry-points."fulmen.plugins"]
acme = "fulmen_acme.plugin"

[tool.setuptools.packages.find]
where = ["src"]
'''

TRAINER_KWARGS = (
    "accelerator='cpu', logger=False, enable_checkpointing=False, enable_progress_bar=False, "
    "enable_model_summary=False, default_root_dir=sys.argv[1]"
)

FIT_SCRIPT = f'''
import json, sys
import torch
import fulmen
from helpers import BoringModule, loader

trainer = fulmen.Trainer(strategy="acme_counting", callbacks=["acme_batches"], max_epochs=2, {TRAINER_KWARGS})
trainer.fit(BoringModule(), loader())
counters = [c for c in trainer.callbacks if type(c).__name__ == "BatchCounter"]

# Fabric users get the very same strategy object type from the same name.
fabric = fulmen.Fabric(strategy="acme_counting", accelerator="cpu")
model, optimizer = fabric.setup(torch.nn.Linear(2, 1), torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
fabric.backward(model(torch.ones(3, 2)).sum())
optimizer.step()

print(json.dumps({{
    "strategy": type(trainer.strategy).__module__ + "." + type(trainer.strategy).__name__,
    "optimizer_steps": trainer.strategy.optimizer_steps,
    "global_step": trainer.global_step,
    "callbacks": len(counters),
    "batches": counters[0].batches,
    "strategy_seen": counters[0].strategy_seen,
    "fabric_strategy": type(fabric.strategy).__name__,
    "fabric_steps": fabric.strategy.optimizer_steps,
}}))
'''

INCOMPATIBLE_SCRIPT = f'''
import json, sys, warnings
import fulmen
from fulmen.errors import FulmenConfigError, FulmenPluginError, FulmenPluginWarning
from helpers import BoringModule, loader

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer = fulmen.Trainer(max_steps=3, {TRAINER_KWARGS})
    trainer.fit(BoringModule(), loader())
plugin_warnings = [str(w.message) for w in caught if issubclass(w.category, FulmenPluginWarning)]

errors = {{}}
for key, kwargs, expected in [
    ("strategy", dict(strategy="acme_counting"), FulmenConfigError),
    ("callback", dict(callbacks=["acme_batches"]), FulmenConfigError),
    ("plugin", dict(plugins=["acme"]), FulmenPluginError),
]:
    try:
        fulmen.Trainer(**kwargs, {TRAINER_KWARGS})
    except expected as exc:
        errors[key] = str(exc)

print(json.dumps({{
    "global_step": trainer.global_step,
    "plugin_warnings": plugin_warnings,
    "errors": errors,
    "imported": "fulmen_acme.plugin" in sys.modules,
}}))
'''


def _make_project(root, requirement):
    project = root / "fulmen-acme"
    (project / "src" / "fulmen_acme").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT.format(requirement=requirement))
    (project / "src" / "fulmen_acme" / "__init__.py").write_text('__version__ = "2.0.0"\n')
    (project / "src" / "fulmen_acme" / "plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    (project / "src" / "fulmen_acme" / "impl.py").write_text(textwrap.dedent(IMPL_MODULE))
    return project


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory):
    """``fulmen-acme`` built and installed with pip (``fulmen>=0.1``)."""
    root = tmp_path_factory.mktemp("acme")
    return pip_install(_make_project(root / "src", "fulmen>=0.1"), root / "site")


@pytest.fixture(scope="module")
def acme_incompatible_site(tmp_path_factory):
    """The same package declaring ``fulmen>=99``."""
    root = tmp_path_factory.mktemp("acme99")
    return pip_install(_make_project(root / "src", "fulmen>=99"), root / "site")


def test_pip_installed_plugin_is_listed_as_loaded_with_its_names(acme_site):
    rows = plugins_json([acme_site])
    row = rows["acme"]
    assert row["status"] == "loaded", row
    assert row["distribution"] == "fulmen-acme"
    assert row["version"] == "2.0.0"
    assert row["target"] == "fulmen_acme.plugin"
    assert row["requirement"] == "fulmen>=0.1"
    assert row["registers"] == {"strategy": ["acme_counting"], "callback": ["acme_batches"]}
    # The built-ins keep their names: the plugin only added to the registry.
    assert "single_device" in rows["fulmen"]["registers"]["strategy"]


def test_pip_installed_plugin_text_listing(acme_site, plugin_sites, capsys):
    plugin_sites(acme_site)
    assert fulmen_cli(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "acme  (fulmen-acme 2.0.0): loaded" in out
    block = out.split("acme  (fulmen-acme 2.0.0)", 1)[1]
    assert "requires fulmen>=0.1" in block
    assert "strategy: acme_counting" in block
    assert "callback: acme_batches" in block


def test_trainer_and_fabric_use_the_plugins_strategy_and_callback_by_name(acme_site, tmp_path):
    script = tmp_path / "fit_with_acme.py"
    script.write_text(FIT_SCRIPT)
    result = last_json_line(run_python([str(script), str(tmp_path)], [acme_site]).stdout)
    assert result["strategy"] == "fulmen_acme.impl.CountingStrategy"
    # 64 samples / batch 8 = 8 steps per epoch, 2 epochs: every step went through the plugin.
    assert result["global_step"] == 16
    assert result["optimizer_steps"] == 16
    assert result["callbacks"] == 1
    assert result["batches"] == 16
    assert result["strategy_seen"] == "CountingStrategy"
    assert result["fabric_strategy"] == "CountingStrategy"
    assert result["fabric_steps"] == 1


def test_incompatible_plugin_is_listed_with_its_requirement(acme_incompatible_site):
    row = plugins_json([acme_incompatible_site])["acme"]
    assert row["status"] == "incompatible", row
    assert row["requirement"] == "fulmen>=99"
    assert "requires fulmen>=99 but found fulmen 0.1.0" in row["reason"]
    assert row["registers"] == {}  # never imported, so it registered nothing


def test_incompatible_plugin_warns_and_its_names_raise_the_recorded_reason(acme_incompatible_site, tmp_path):
    script = tmp_path / "incompatible.py"
    script.write_text(INCOMPATIBLE_SCRIPT)
    result = last_json_line(run_python([str(script), str(tmp_path)], [acme_incompatible_site]).stdout)

    # Training goes on without the plugin ...
    assert result["global_step"] == 3
    # ... after one warning that names the plugin and the requirement that failed.
    assert len(result["plugin_warnings"]) == 1, result["plugin_warnings"]
    warning = result["plugin_warnings"][0]
    assert "'acme'" in warning and "fulmen-acme" in warning and "fulmen>=99" in warning
    # The requirement is checked before the import: the module was never executed.
    assert result["imported"] is False

    reason = "fulmen-acme requires fulmen>=99 but found fulmen 0.1.0"
    assert set(result["errors"]) == {"strategy", "callback", "plugin"}, result["errors"]
    assert "unknown strategy 'acme_counting'" in result["errors"]["strategy"]
    assert reason in result["errors"]["strategy"]
    assert reason in result["errors"]["callback"]
    assert "fulmen plugin 'acme' cannot be used" in result["errors"]["plugin"]
    assert reason in result["errors"]["plugin"]
