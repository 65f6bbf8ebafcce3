"""An unknown name points at the installed plugins that were not loaded: denied, outside the
allow list, switched off by ``FULMEN_DISABLE_PLUGIN_AUTOLOAD``, failed or incompatible. One
of them may be the plugin that provides the name, so the error names each (plugin,
distribution, version), quotes its recorded reason and says how to load it.

The official packages' names have their own hint (``test_plugin_registry_errors.py``); these
tests use names no official package claims, from throwaway distributions installed for real.
"""

from __future__ import annotations

import re
import warnings

import pytest
from helpers import quiet_trainer
from plugin_helpers import strategy_dist, strategy_plugin, write_dist

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.plugins import discovery, policy

HEADER = "Installed plugins that were not loaded and may provide it:"


def unknown_strategy_error(**kwargs) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken plugins warn; the error is what is checked
        with pytest.raises(FulmenConfigError) as excinfo:
            fulmen.Fabric(accelerator="cpu", strategy="warp_drive", **kwargs)
    message = str(excinfo.value)
    assert message.startswith("unknown strategy 'warp_drive'. Available: ")
    return message


def line_about(message: str, plugin: str) -> str:
    """The hint line of one plugin."""
    lines = [line for line in message.splitlines() if line.startswith(f"  - plugin {plugin!r} ")]
    assert len(lines) == 1, message
    return lines[0]


@pytest.fixture
def alpha(tmp_path, plugin_sites):
    """An installed plugin ``alpha`` (fulmen-alpha 1.0.0) registering ``alpha_strategy``."""
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))


# ---------------------------------------------------------------------------- switched off


@pytest.mark.parametrize("how", ["argument", "environment", "distribution name"])
def test_a_denied_plugin_is_named_with_its_reason_and_how_to_load_it(how, alpha, monkeypatch):
    kwargs = {}
    if how == "argument":
        kwargs["deny_plugins"] = ["alpha"]
    elif how == "environment":
        monkeypatch.setenv(policy.ENV_DENY, "alpha")
    else:
        kwargs["deny_plugins"] = "Fulmen_Alpha"
    message = unknown_strategy_error(**kwargs)
    assert HEADER in message
    assert line_about(message, "alpha") == (
        "  - plugin 'alpha' (distribution fulmen-alpha 1.0.0) is disabled: denied by the deny list "
        "(FULMEN_PLUGINS_DENY or deny_plugins=). It might provide strategy 'warp_drive'; to load it, take "
        "'alpha' off the deny list (FULMEN_PLUGINS_DENY, deny_plugins= or the deny of the fulmen configuration)"
    )


def test_a_plugin_outside_the_allow_list_is_named(alpha):
    message = unknown_strategy_error(allow_plugins=["loggers"])
    line = line_about(message, "alpha")
    assert "(distribution fulmen-alpha 1.0.0) is disabled: not in the allow list" in line
    assert "to load it, add 'alpha' to the allow list (FULMEN_PLUGINS_ALLOW or allow_plugins=)" in line
    assert "plugins=['alpha']" in line
    assert "plugin 'loggers' " not in message  # it loaded, so it is not a suspect


def test_with_autoload_off_every_plugin_is_named(alpha, monkeypatch):
    monkeypatch.setenv(policy.ENV_DISABLE_AUTOLOAD, "1")
    message = unknown_strategy_error()
    line = line_about(message, "alpha")
    assert f"is disabled: {policy.ENV_DISABLE_AUTOLOAD} is set" in line
    assert f"to load it, unset {policy.ENV_DISABLE_AUTOLOAD}, name 'alpha' in FULMEN_PLUGINS_ALLOW" in line
    for official in ("fsdp", "deepspeed", "xla", "loggers"):  # installed in the venv, all switched off
        assert f"  - plugin {official!r} (distribution fulmen-" in message


def test_the_advice_works(alpha):
    """Following the hint (allowing the plugin) makes the name resolve."""
    unknown_strategy_error(allow_plugins=["loggers"])
    fabric = fulmen.Fabric(accelerator="cpu", strategy="alpha_strategy", allow_plugins=["loggers", "alpha"])
    assert fabric.strategy.origin == "alpha_fulmen_plugin"


# ---------------------------------------------------------------------------- broken


def test_a_plugin_whose_import_failed_is_named_with_the_recorded_reason(tmp_path, plugin_sites):
    plugin_sites(write_dist(tmp_path / "broken", "fulmen-broken",
                            {"broken_hint_plugin.py": "raise RuntimeError('boom from the broken plugin')\n"},
                            {"broken": "broken_hint_plugin"}, version="0.3.1"))
    message = unknown_strategy_error()
    line = line_about(message, "broken")
    record = discovery.records()["broken"]
    assert record.status == discovery.FAILED
    assert line.startswith(f"  - plugin 'broken' (distribution fulmen-broken 0.3.1) failed to load: {record.reason}.")
    assert "import of broken_hint_plugin raised RuntimeError: boom from the broken plugin" in line
    assert "It might provide strategy 'warp_drive'" in line
    assert line.endswith(
        "; to load it, fix that error, for example by reinstalling or upgrading fulmen-broken "
        "(pip install -U 'fulmen-broken')"
    )


def test_a_plugin_whose_hooks_do_not_match_is_named(tmp_path, plugin_sites):
    source = "import fulmen\n\n@fulmen.hookimpl\ndef register_strategies(register, options):\n    pass\n"
    plugin_sites(write_dist(tmp_path / "badhooks", "fulmen-badhooks", {"badhooks_hint_plugin.py": source},
                            {"badhooks": "badhooks_hint_plugin"}))
    line = line_about(unknown_strategy_error(), "badhooks")
    assert "(distribution fulmen-badhooks 1.0.0) failed to load: its hooks do not match" in line
    assert "to load it, upgrade fulmen-badhooks to a release built for this fulmen" in line


def test_an_incompatible_plugin_is_named_and_its_reason_says_what_to_install(tmp_path, plugin_sites):
    module = "future_hint_plugin"
    plugin_sites(write_dist(tmp_path / "future", "fulmen-future", {f"{module}.py": strategy_plugin(module, "x")},
                            {"future": module}, requires=("fulmen>=99",)))
    line = line_about(unknown_strategy_error(), "future")
    assert re.search(
        r"\(distribution fulmen-future 1\.0\.0\) is incompatible: fulmen-future requires fulmen>=99 but found "
        r"fulmen \S+; install a fulmen-future release built for fulmen \S+, or a fulmen that matches >=99\. "
        r"It might provide strategy 'warp_drive'$",
        line,
    ), line


# ---------------------------------------------------------------------------- what is known


def test_a_plugin_known_to_provide_the_name_says_so_and_comes_first(tmp_path, plugin_sites):
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
                 strategy_dist(tmp_path, "fulmen-aardvark", "aardvark", "aardvark_strategy"))
    fulmen.Fabric(accelerator="cpu")  # both load once: their names are now known to this process
    with pytest.raises(FulmenConfigError) as excinfo:
        fulmen.Fabric(accelerator="cpu", strategy="alpha_strategy", deny_plugins=["alpha", "aardvark"])
    message = str(excinfo.value)
    hint = message.split(HEADER + "\n")[1].splitlines()
    assert hint[0].startswith("  - plugin 'alpha' ") and "It provides strategy 'alpha_strategy'" in hint[0]
    assert "It might provide strategy 'alpha_strategy'" in line_about(message, "aardvark")


def test_the_trainer_and_the_other_kinds_get_the_hint_too(alpha, tmp_path):
    with pytest.raises(FulmenConfigError) as excinfo:
        quiet_trainer(tmp_path, logger="papyrus", deny_plugins=["alpha"])
    message = str(excinfo.value)
    assert message.startswith("unknown logger 'papyrus'. Available: ")
    assert "It might provide logger 'papyrus'" in line_about(message, "alpha")


def test_nothing_unloaded_means_no_hint(clean_plugin_env):
    assert HEADER not in unknown_strategy_error()


def test_an_official_name_of_a_denied_package_says_how_to_load_it(clean_plugin_env):
    with pytest.raises(FulmenConfigError) as excinfo:
        fulmen.Fabric(accelerator="cpu", strategy="deepspeed_stage_2", deny_plugins=["deepspeed"])
    message = str(excinfo.value)
    assert (
        "'deepspeed_stage_2' comes from fulmen-strategy-deepspeed, which could not be used: denied by the deny "
        "list (FULMEN_PLUGINS_DENY or deny_plugins=); to load it, take 'deepspeed' off the deny list"
    ) in message
    assert HEADER not in message  # the official package is the answer; no list of suspects
