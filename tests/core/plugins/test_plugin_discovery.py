"""Discovery outcomes: broken plugins, name collisions, autoload switch, allow and deny lists.

Each test installs small plugin distributions into directories of their own (real
``dist-info`` metadata read by ``importlib.metadata``) and rescans, in this process; the
``plugin_sites`` fixture puts everything back afterwards.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
from helpers import BoringModule, loader, quiet_trainer
from plugin_helpers import strategy_dist, strategy_plugin, write_dist

import fulmen
from fulmen.cli import main as fulmen_cli
from fulmen.errors import FulmenConfigError, FulmenPluginError, FulmenPluginWarning
from fulmen.plugins import discovery, policy

OFFICIAL = ("fsdp", "deepspeed", "xla", "loggers")


def plugin_warnings(record, *needles):
    """The FulmenPluginWarning messages that contain every needle."""
    messages = [str(w.message) for w in record if issubclass(w.category, FulmenPluginWarning)]
    return [m for m in messages if all(n in m for n in needles)]


def cli_json(capsys):
    assert fulmen_cli(["plugins", "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)["plugins"]}


# ---------------------------------------------------------------------------- broken plugins

BROKEN_SOURCES = {
    "RuntimeError": "raise RuntimeError('boom from the broken plugin')\n",
    "ModuleNotFoundError": "import a_backend_that_is_not_installed_anywhere\n",
    "SystemExit": "raise SystemExit('the plugin tried to exit')\n",
}


@pytest.mark.parametrize("error", sorted(BROKEN_SOURCES))
def test_plugin_whose_import_raises_is_a_warning_and_the_trainer_still_trains(error, tmp_path, plugin_sites):
    site = write_dist(tmp_path / "broken", "fulmen-broken", {"broken_plugin.py": BROKEN_SOURCES[error]},
                      {"broken": "broken_plugin"})
    plugin_sites(site)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = quiet_trainer(tmp_path, max_steps=2, logger=False, enable_checkpointing=False)
    found = plugin_warnings(record, "'broken'", "fulmen-broken", error)
    assert len(found) == 1, [str(w.message) for w in record]
    assert "FULMEN_PLUGINS_DENY=broken" in found[0]  # the warning says how to silence it

    trainer.fit(BoringModule(), loader())
    assert trainer.global_step == 2
    # The other plugins were not taken down with it.
    assert {"fulmen-strategy-fsdp", "fulmen-loggers"} <= set(trainer.fabric.registry.loaded_distributions)

    record = discovery.records()["broken"]
    assert record.status == discovery.FAILED
    assert f"import of broken_plugin raised {error}" in record.reason
    assert "broken_plugin.py:1" in record.reason  # where it raised


def test_broken_plugin_is_failed_in_cli_json_with_reason(tmp_path, plugin_sites, capsys):
    site = write_dist(tmp_path / "broken", "fulmen-broken", {"broken_plugin.py": BROKEN_SOURCES["RuntimeError"]},
                      {"broken": "broken_plugin"}, version="0.3.1")
    plugin_sites(site)
    with pytest.warns(FulmenPluginWarning, match="'broken' from fulmen-broken failed to load"):
        rows = cli_json(capsys)
    row = rows["broken"]
    assert row["status"] == "failed"
    assert row["distribution"] == "fulmen-broken" and row["version"] == "0.3.1"
    assert "RuntimeError: boom from the broken plugin" in row["reason"]
    assert rows["fulmen"]["status"] == "loaded"
    assert all(rows[name]["status"] == "loaded" for name in OFFICIAL)


def test_broken_plugin_asked_for_by_name_raises_its_recorded_reason(tmp_path, plugin_sites):
    site = write_dist(tmp_path / "broken", "fulmen-broken", {"broken_plugin.py": BROKEN_SOURCES["RuntimeError"]},
                      {"broken": "broken_plugin"})
    plugin_sites(site)
    with pytest.warns(FulmenPluginWarning):
        with pytest.raises(FulmenPluginError, match="'broken' cannot be used: import of broken_plugin raised "
                                                    "RuntimeError: boom from the broken plugin"):
            fulmen.Fabric(accelerator="cpu", plugins=["broken"])
    # A name no plugin registered lists the broken plugin as a possible provider.
    with pytest.raises(FulmenConfigError, match=r"not loaded and may provide it:\n  - plugin 'broken' "
                                                r"\(distribution fulmen-broken 1\.0\.0\) failed to load: import of"):
        fulmen.Fabric(accelerator="cpu", strategy="something_broken_might_provide")


def test_plugin_whose_hooks_do_not_match_the_specs_is_a_warning(tmp_path, plugin_sites, capsys):
    source = '''
import fulmen


@fulmen.hookimpl
def register_strategies(register, options):
    raise AssertionError("never called")
'''
    site = write_dist(tmp_path / "badhooks", "fulmen-badhooks", {"badhooks_plugin.py": source},
                      {"badhooks": "badhooks_plugin"})
    plugin_sites(site)
    with pytest.warns(FulmenPluginWarning, match=r"(?s)'badhooks' from fulmen-badhooks is skipped.*'options'"):
        fabric = fulmen.Fabric(accelerator="cpu")
    assert all(fabric.registry.get("strategy", n).plugin != "badhooks" for n in fabric.registry.names("strategy"))
    assert "badhooks" in fabric.registry.failed_plugins
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not once per Trainer
        row = cli_json(capsys)["badhooks"]
    assert row["status"] == "failed"
    assert "do not match fulmen's hook specifications" in row["reason"]
    assert "register_strategies" in row["reason"]


# ---------------------------------------------------------------------------- collisions

@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_two_plugins_registering_one_strategy_name_warn_and_keep_the_first(order, tmp_path, plugin_sites):
    site_a = strategy_dist(tmp_path, "fulmen-twin-a", "twin_a", "twin")
    site_b = strategy_dist(tmp_path, "fulmen-twin-b", "twin_b", "twin")
    first, second = ("a", "b") if order == "a_first" else ("b", "a")
    plugin_sites(*((site_a, site_b) if order == "a_first" else (site_b, site_a)))

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fabric = fulmen.Fabric(accelerator="cpu", strategy="twin")
    found = plugin_warnings(record, f"plugin 'twin_{second}' (distribution fulmen-twin-{second})",
                            f"plugin 'twin_{first}' (distribution fulmen-twin-{first}) already registered",
                            "strategy 'twin'")
    assert len(found) == 1, [str(w.message) for w in record]
    assert fabric.strategy.origin == f"twin_{first}_fulmen_plugin"
    entry = fabric.registry.get("strategy", "twin")
    assert (entry.plugin, entry.distribution) == (f"twin_{first}", f"fulmen-twin-{first}")


def test_plugin_cannot_replace_a_builtin_name(tmp_path, plugin_sites):
    site = strategy_dist(tmp_path, "fulmen-usurper", "usurper", "single_device")
    plugin_sites(site)
    with pytest.warns(FulmenPluginWarning, match="'usurper'.*'single_device', which plugin 'fulmen'"):
        fabric = fulmen.Fabric(accelerator="cpu", strategy="single_device")
    assert type(fabric.strategy) is fulmen.strategies.SingleDeviceStrategy
    assert fabric.registry.get("strategy", "single_device").plugin == "fulmen"


def test_two_distributions_declaring_one_entry_point_name_warn_at_scan(tmp_path, plugin_sites):
    first = strategy_dist(tmp_path, "fulmen-same-one", "same", "same_one")
    second = write_dist(tmp_path / "fulmen-same-two", "fulmen-same-two",
                        {"same_two_plugin.py": strategy_plugin("same_two_plugin", "same_two")},
                        {"same": "same_two_plugin"})
    with pytest.warns(FulmenPluginWarning, match="'same' is declared by fulmen-same-two and by fulmen-same-one"):
        records = plugin_sites(first, second)
    assert records["same"].distribution == "fulmen-same-one"
    fabric = fulmen.Fabric(accelerator="cpu")
    assert "same_one" in fabric.registry.names("strategy")
    assert "same_two" not in fabric.registry.names("strategy")
    assert "same_two_plugin" not in sys.modules


# ---------------------------------------------------------------------------- autoload switch

@pytest.mark.parametrize("value,disabled", [("1", True), ("true", True), ("YES", True),
                                            ("0", False), ("false", False), ("", False)])
def test_disable_autoload_values(value, disabled, tmp_path, plugin_sites, monkeypatch):
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    monkeypatch.setenv(policy.ENV_DISABLE_AUTOLOAD, value)
    names = fulmen.Fabric(accelerator="cpu").registry.names("strategy")
    assert ("alpha_strategy" not in names) is disabled
    assert "single_device" in names


def test_disable_autoload_shows_disabled_and_builtins_still_train(tmp_path, plugin_sites, monkeypatch, capsys):
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    monkeypatch.setenv(policy.ENV_DISABLE_AUTOLOAD, "1")

    rows = cli_json(capsys)
    assert rows["fulmen"]["status"] == "loaded"
    assert "single_device" in rows["fulmen"]["registers"]["strategy"]
    for name in (*OFFICIAL, "alpha"):
        assert rows[name]["status"] == "disabled", rows[name]
        assert policy.ENV_DISABLE_AUTOLOAD in rows[name]["reason"]

    trainer = quiet_trainer(tmp_path, max_steps=2, logger="csv", enable_checkpointing=False)
    trainer.fit(BoringModule(), loader())
    assert trainer.global_step == 2
    assert type(trainer.logger).__name__ == "CSVLogger"
    assert "alpha_fulmen_plugin" not in sys.modules  # disabled plugins are never imported
    assert trainer.fabric.registry.loaded_distributions == {}
    with pytest.raises(FulmenConfigError, match="comes from fulmen-strategy-fsdp, which could not be used: "
                                                + policy.ENV_DISABLE_AUTOLOAD):
        quiet_trainer(tmp_path, strategy="fsdp")


def test_disable_autoload_with_allow_list_loads_only_the_allowed(tmp_path, plugin_sites, monkeypatch):
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
                 strategy_dist(tmp_path, "fulmen-beta", "beta", "beta_strategy"))
    monkeypatch.setenv(policy.ENV_DISABLE_AUTOLOAD, "1")
    monkeypatch.setenv(policy.ENV_ALLOW, "alpha")
    fabric = fulmen.Fabric(accelerator="cpu", strategy="alpha_strategy")
    assert fabric.strategy.origin == "alpha_fulmen_plugin"
    assert "beta_strategy" not in fabric.registry.names("strategy")


# ---------------------------------------------------------------------------- allow / deny

def _registry_of(api, tmp_path, **kwargs):
    if api == "Trainer":
        return quiet_trainer(tmp_path, **kwargs).fabric.registry
    return fulmen.Fabric(accelerator="cpu", **kwargs).registry


CASES = {
    # name: (environment, arguments, expected strategies among alpha/beta, fsdp loaded)
    "env-deny": ({policy.ENV_DENY: "alpha"}, {}, {"beta_strategy"}, True),
    "env-deny-by-distribution": ({policy.ENV_DENY: "fulmen-alpha, fulmen-strategy-fsdp"}, {},
                                 {"beta_strategy"}, False),
    "env-allow": ({policy.ENV_ALLOW: "alpha"}, {}, {"alpha_strategy"}, False),
    "arg-deny": ({}, {"deny_plugins": ["alpha"]}, {"beta_strategy"}, True),
    "arg-deny-string": ({}, {"deny_plugins": "alpha,beta"}, set(), True),
    "arg-allow": ({}, {"allow_plugins": ["beta", "fsdp"]}, {"beta_strategy"}, True),
    "arg-allow-by-distribution": ({}, {"allow_plugins": ["Fulmen_Beta"]}, {"beta_strategy"}, False),
    "env-and-arg-allow-add-up": ({policy.ENV_ALLOW: "alpha"}, {"allow_plugins": ["beta"]},
                                 {"alpha_strategy", "beta_strategy"}, False),
    "deny-beats-allow": ({policy.ENV_DENY: "alpha"}, {"allow_plugins": ["alpha", "beta"]},
                         {"beta_strategy"}, False),
}


@pytest.mark.parametrize("api", ["Trainer", "Fabric"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_allow_and_deny_lists(case, api, tmp_path, plugin_sites, monkeypatch):
    env, kwargs, expected, fsdp_loaded = CASES[case]
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
                 strategy_dist(tmp_path, "fulmen-beta", "beta", "beta_strategy"))
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    registry = _registry_of(api, tmp_path, **kwargs)
    # the built-ins' and the official strategy packages' names aside (fsdp's checked below)
    official = ("fulmen", "fsdp", "deepspeed", "xla", "ray")
    builtin = {n for n in registry.names("strategy") if registry.get("strategy", n).plugin in official}
    assert set(registry.names("strategy")) - builtin == expected
    assert "single_device" in registry.names("strategy")  # built-ins are never filtered
    assert ("fulmen-strategy-fsdp" in registry.loaded_distributions) is fsdp_loaded
    if "alpha_strategy" not in expected:
        assert "alpha_fulmen_plugin" not in sys.modules  # filtered before the import
        assert "alpha" in registry.unavailable


def test_denied_plugin_is_reported_as_disabled_with_the_reason(tmp_path, plugin_sites, monkeypatch, capsys):
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    monkeypatch.setenv(policy.ENV_DENY, "alpha")
    monkeypatch.setenv(policy.ENV_ALLOW, "alpha,fsdp")
    rows = cli_json(capsys)
    assert rows["alpha"]["status"] == "disabled"
    assert "deny list" in rows["alpha"]["reason"]
    assert rows["fsdp"]["status"] == "loaded"
    assert rows["xla"]["status"] == "disabled"
    assert "not in the allow list" in rows["xla"]["reason"]


def test_lists_apply_per_instance(tmp_path, plugin_sites):
    """One Trainer's deny list does not leak into the next one in the same process."""
    plugin_sites(strategy_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    denied = quiet_trainer(tmp_path, deny_plugins=["alpha"])
    allowed = quiet_trainer(tmp_path, strategy="alpha_strategy")
    assert "alpha_strategy" not in denied.fabric.registry.names("strategy")
    assert allowed.strategy.origin == "alpha_fulmen_plugin"
    with pytest.raises(FulmenConfigError, match="unknown strategy 'alpha_strategy'"):
        quiet_trainer(tmp_path, strategy="alpha_strategy", deny_plugins="alpha")
