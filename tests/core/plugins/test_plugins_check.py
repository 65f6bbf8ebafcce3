"""``fulmen plugins --check``: exit status and messages for each way an installed set can
disagree with its configuration (what a curated distribution's CI runs)."""

from __future__ import annotations

import json
import textwrap

import pytest
from plugin_helpers import write_dist

from fulmen.cli import main as fulmen_cli
from fulmen.plugins import config as plugin_config

CONFIG_ENV = ("FULMEN_CONFIG", "FULMEN_REQUIRE_PLUGINS", *plugin_config.ENV_DEFAULTS.values())


def strategy_source(name: str) -> str:
    return f'''
import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen.strategies import SingleDeviceStrategy

    register({name!r}, SingleDeviceStrategy)
'''


def dist(root, name, entry, source, requires=("fulmen>=0.1",), version="1.0.0"):
    module = f"{entry.replace('-', '_')}_check_plugin_{name.replace('-', '_')}"
    return write_dist(root / name, name, {f"{module}.py": source}, {entry: module}, requires=requires, version=version)


@pytest.fixture
def workdir(tmp_path, monkeypatch, clean_plugin_env):
    for var in CONFIG_ENV:
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def check(capsys, *args):
    code = fulmen_cli(["plugins", "--check", *args])
    out = capsys.readouterr().out
    return code, (json.loads(out) if "--json" in args else out)


def write_config(workdir, text):
    path = workdir / "fulmen.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_matching_set_exits_zero_and_says_what_it_checked(workdir, capsys):
    path = write_config(workdir, '''
        deny = ["fulmen-strategy-deepspeed"]
        [require]
        fulmen-strategy-fsdp = ">=0.1,<0.2"
        loggers = ""
        [defaults]
        precision = "bf16-mixed"
        logger = "csv"
    ''')
    code, out = check(capsys)
    assert code == 0, out
    assert f"configuration: {path}" in out
    assert "deny: fulmen-strategy-deepspeed" in out
    assert "require: fulmen-strategy-fsdp<0.2,>=0.1, loggers" in out
    assert "defaults: precision='bf16-mixed', logger='csv'" in out
    assert "deepspeed (fulmen-strategy-deepspeed 0.1.0): disabled - denied by the deny list" in out
    assert out.rstrip().endswith("OK: the installed plugins match the configuration")


def test_without_configuration_a_healthy_environment_passes(workdir, capsys):
    code, report = check(capsys, "--json")
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["config"]["sources"] == []


def test_missing_required_plugin(workdir, capsys):
    path = write_config(workdir, '[require]\nfulmen-acme-tracker = ">=1.2"\n')
    code, report = check(capsys, "--json")
    assert code == 1
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith(
        f"required plugin 'fulmen-acme-tracker' (fulmen-acme-tracker>=1.2, from {path}) is not installed; installed plugins: ")
    assert report["problems"][0].endswith("Fix: pip install 'fulmen-acme-tracker>=1.2'")


def test_incompatible_plugin(workdir, tmp_path, plugin_sites, capsys):
    plugin_sites(dist(tmp_path, "fulmen-future", "future", strategy_source("future_strategy"), requires=("fulmen>=99",)))
    code, report = check(capsys, "--json")
    assert code == 1
    assert report["problems"] == [
        "plugin 'future' (fulmen-future 1.0.0) is incompatible: fulmen-future requires fulmen>=99 but found fulmen "
        "0.1.0; install a fulmen-future release built for fulmen 0.1.0, or a fulmen that matches >=99"]
    row = next(r for r in report["plugins"] if r["name"] == "future")
    assert row["status"] == "incompatible"


def test_broken_plugin(workdir, tmp_path, plugin_sites, capsys):
    plugin_sites(dist(tmp_path, "fulmen-broken", "broken", "raise RuntimeError('boom at import')\n", version="0.3.0"))
    code, out = check(capsys)
    assert code == 1
    assert "broken (fulmen-broken 0.3.0): failed - import of broken_check_plugin_fulmen_broken raised RuntimeError: boom at import" in out
    assert ("  - plugin 'broken' (fulmen-broken 0.3.0) is failed: import of broken_check_plugin_fulmen_broken raised "
            "RuntimeError: boom at import") in out
    assert "1 problem(s):" in out


def test_two_plugins_claiming_one_strategy_name(workdir, tmp_path, plugin_sites, capsys):
    plugin_sites(dist(tmp_path, "fulmen-twin-a", "twin-a", strategy_source("twin")),
                 dist(tmp_path, "fulmen-twin-b", "twin-b", strategy_source("twin")))
    code, report = check(capsys, "--json")
    assert code == 1
    assert report["problems"] == [
        "plugin 'twin-b' (distribution fulmen-twin-b) tried to register strategy 'twin', which plugin 'twin-a' "
        "(distribution fulmen-twin-a) already registered; the first one is kept. Fix: rename one of them, or deny "
        "one plugin with FULMEN_PLUGINS_DENY=twin-b"]


def test_two_distributions_claiming_one_plugin_name(workdir, tmp_path, plugin_sites, capsys):
    with pytest.warns(Warning):
        plugin_sites(dist(tmp_path, "fulmen-same-one", "same", strategy_source("same_one")),
                     dist(tmp_path, "fulmen-same-two", "same", strategy_source("same_two")))
    code, report = check(capsys, "--json")
    assert code == 1
    assert report["problems"] == [
        "plugin name 'same' is declared by several distributions (fulmen-same-one, fulmen-same-two); only the first "
        "is used. Fix: uninstall one of them or rename its entry point"]


def test_deny_listed_required_plugin(workdir, tmp_path, plugin_sites, capsys):
    plugin_sites(dist(tmp_path, "fulmen-alpha", "alpha", strategy_source("alpha_strategy")))
    path = write_config(workdir, 'deny = ["fulmen-alpha"]\n[require]\nalpha = ">=1"\n')
    code, report = check(capsys, "--json")
    assert code == 1
    assert report["problems"] == [
        f"required plugin 'alpha' (from {path}) is also denied (deny list, FULMEN_PLUGINS_DENY or deny_plugins=); "
        "remove it from one of the two"]
    assert next(r for r in report["plugins"] if r["name"] == "alpha")["status"] == "disabled"


def test_deny_listed_plugin_is_not_a_problem(workdir, tmp_path, plugin_sites, capsys, monkeypatch):
    plugin_sites(dist(tmp_path, "fulmen-broken", "broken", "raise RuntimeError('boom')\n"))
    monkeypatch.setenv("FULMEN_PLUGINS_DENY", "broken")
    code, report = check(capsys, "--json")
    assert code == 0, report["problems"]
    assert report["config"]["deny"] == ["broken"]
    row = next(r for r in report["plugins"] if r["name"] == "broken")
    assert row["status"] == "disabled"
    assert row["reason"] == "denied by the deny list (FULMEN_PLUGINS_DENY or deny_plugins=)"


def test_version_mismatch_default_that_names_nothing_and_allow_typo(workdir, capsys):
    path = write_config(workdir, '''
        allow = ["fsdp", "logers"]
        [require]
        fsdp = ">=0.2"
        [defaults]
        strategy = "fsdp_turbo"
    ''')
    code, report = check(capsys, "--json")
    assert code == 1
    problems = report["problems"]
    assert problems[0] == (f"required plugin 'fsdp' (from {path}) needs fulmen-strategy-fsdp>=0.2 but "
                           "fulmen-strategy-fsdp 0.1.0 is installed. Fix: pip install 'fulmen-strategy-fsdp>=0.2'")
    assert problems[1].startswith(f"the default strategy 'fsdp_turbo' (from {path}) is not registered: unknown strategy "
                                  "'fsdp_turbo'. Available: ")
    assert problems[2] == f"the allow list of {path} names 'logers', but no installed plugin or distribution is called that"
    assert len(problems) == 3


def test_unreadable_configuration_is_reported_not_raised(workdir, capsys):
    write_config(workdir, 'alow = ["x"]\n')
    code, out = check(capsys)
    assert code == 1
    assert "the configuration cannot be read:" in out and "unknown key(s) 'alow'" in out
