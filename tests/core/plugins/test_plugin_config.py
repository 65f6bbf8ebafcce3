"""Curated distributions: ``fulmen.toml`` / ``[tool.fulmen]`` / ``fulmen.config`` entry points
/ environment variables, as seen by discovery, the Trainer and Fabric.

Plugin distributions are written into directories of their own and activated with the
``plugin_sites`` fixture; each test works in a fresh directory, so the configuration files
it writes are the only ones found from there upward.
"""

from __future__ import annotations

import textwrap
import warnings

import pytest
from helpers import BoringModule, loader, quiet_trainer
from plugin_helpers import write_dist

import fulmen
from fulmen.errors import FulmenConfigError, FulmenPluginError, FulmenPluginWarning
from fulmen.plugins import config as plugin_config
from fulmen.plugins import policy

CONFIG_ENV = ("FULMEN_CONFIG", "FULMEN_REQUIRE_PLUGINS", *plugin_config.ENV_DEFAULTS.values())


def strategy_plugin(strategy: str) -> str:
    return f'''
import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen.strategies import SingleDeviceStrategy

    register({strategy!r}, SingleDeviceStrategy, "from a test plugin")
'''


def plugin_dist(root, dist, entry, strategy, version="1.0.0", requires=("fulmen>=0.1",), source=None):
    module = f"{entry}_cfg_plugin"
    return write_dist(root / f"{dist}-{version}", dist, {f"{module}.py": source or strategy_plugin(strategy)},
                      {entry: module}, requires=requires, version=version)


def config_dist(root, dist, toml, version="2.0.0"):
    """A meta-package shipping ``fulmen.toml`` through the ``fulmen.config`` entry point."""
    package = dist.replace("-", "_")
    site = root / dist
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    (site / package / "fulmen.toml").write_text(textwrap.dedent(toml))
    info = site / f"{package}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fulmen.config]\n{dist} = {package}\n")
    return site


@pytest.fixture
def project(tmp_path, plugin_sites, monkeypatch):
    """A fresh working directory with no configuration above it; returns a writer."""
    for var in CONFIG_ENV:
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)

    def write(text, name="fulmen.toml", where=work):
        path = where / name
        path.write_text(textwrap.dedent(text))
        return path

    write.dir = work
    return write


def trainer(tmp_path, **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    return quiet_trainer(tmp_path, **kwargs)


# ---------------------------------------------------------------------------- finding and parsing


def test_fulmen_toml_is_read_with_every_key(project):
    path = project('''
        allow = ["alpha", "fulmen-loggers"]
        block = ["deepspeed"]
        deny = ["xla"]
        [require]
        fulmen-strategy-fsdp = ">=0.1,<0.2"
        loggers = ""
        [defaults]
        precision = "bf16-mixed"
        logger = false
    ''')
    cfg = plugin_config.active()
    assert cfg.sources == [str(path)]
    assert cfg.allow == {"alpha", "fulmen-loggers"}
    assert cfg.deny == {"deepspeed", "xla"}
    assert {name: str(req.specifier) for name, req in cfg.require.items()} == {
        "fulmen-strategy-fsdp": "<0.2,>=0.1", "loggers": ""}
    assert cfg.defaults == {"precision": ("bf16-mixed", str(path)), "logger": (False, str(path))}


def test_nearest_pyproject_with_a_fulmen_table_is_found_from_a_subdirectory(project):
    project('[defaults]\nprecision = "64-true"\n', name="fulmen.toml", where=project.dir.parent)
    project('[project]\nname = "app"\n[tool.fulmen.defaults]\nprecision = "bf16-true"\n', name="pyproject.toml")
    nested = project.dir / "src" / "pkg"
    nested.mkdir(parents=True)
    cfg = plugin_config.active(nested)
    assert cfg.sources == [f"{project.dir / 'pyproject.toml'} [tool.fulmen]"]
    assert cfg.default("precision")[0] == "bf16-true"


def test_pyproject_without_the_table_is_skipped_on_the_way_up(project):
    above = project('[defaults]\nprecision = "64-true"\n', name="fulmen.toml", where=project.dir.parent)
    project('[project]\nname = "app"\n', name="pyproject.toml")
    assert plugin_config.active().sources == [str(above)]


def test_fulmen_config_variable_points_at_a_file_or_switches_files_off(project, monkeypatch, tmp_path):
    project('[defaults]\nprecision = "64-true"\n')
    elsewhere = project('[tool.fulmen.defaults]\nprecision = "bf16-true"\n', name="pyproject.toml", where=tmp_path)
    monkeypatch.setenv("FULMEN_CONFIG", str(elsewhere))
    assert plugin_config.active().default("precision")[0] == "bf16-true"
    monkeypatch.setenv("FULMEN_CONFIG", "none")
    assert plugin_config.active().sources == []
    monkeypatch.setenv("FULMEN_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FulmenConfigError, match="FULMEN_CONFIG='.*missing.toml' names no file"):
        plugin_config.active()


@pytest.mark.parametrize("text,message", [
    ('alow = ["x"]\n', "unknown key(s) 'alow'; known keys: allow, deny, block, require, defaults"),
    ('allow = "x\n', "is not valid TOML"),
    ('[defaults]\nstrategies = "ddp"\n', "unknown default(s) 'strategies'; known: accelerator, strategy, precision, logger"),
    ('[require]\nfsdp = 1\n', "require.fsdp must be a version specifier string"),
    ('require = ["fsdp>>1"]\n', "require entry 'fsdp>>1' is not a valid requirement"),
    ('deny = [1]\n', "deny must be a list of plugin or distribution names"),
])
def test_mistakes_in_the_file_are_errors_that_name_the_file(project, tmp_path, text, message):
    path = project(text)
    with pytest.raises(FulmenConfigError) as info:
        trainer(tmp_path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_requirement_list_from_the_environment_keeps_specifiers_together():
    assert plugin_config.parse_requirement_list("fsdp>=0.1,<0.2, loggers,fulmen-x ~=1.2 ,") == [
        "fsdp>=0.1,<0.2", "loggers", "fulmen-x ~=1.2"]


# ---------------------------------------------------------------------------- allow / deny


def test_deny_in_the_file_disables_a_plugin_and_arguments_cannot_undo_it(project, tmp_path, plugin_sites):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    project('block = ["fulmen-alpha"]\n')
    fabric = fulmen.Fabric(accelerator="cpu", allow_plugins=["alpha"])
    assert "alpha_strategy" not in fabric.registry.names("strategy")
    assert fabric._plugin_set.disabled["alpha"] == "denied by the deny list (FULMEN_PLUGINS_DENY or deny_plugins=)"
    with pytest.raises(FulmenPluginError, match=r"plugins=\['alpha'\] asks for a plugin that is denied"):
        fulmen.Fabric(accelerator="cpu", plugins=["alpha"])


def test_allow_in_the_file_adds_to_the_environment_and_arguments(project, tmp_path, plugin_sites, monkeypatch):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
                 plugin_dist(tmp_path, "fulmen-beta", "beta", "beta_strategy"),
                 plugin_dist(tmp_path, "fulmen-gamma", "gamma", "gamma_strategy"))
    project('allow = ["alpha"]\n')
    monkeypatch.setenv(policy.ENV_ALLOW, "beta")
    names = fulmen.Fabric(accelerator="cpu").registry.names("strategy")
    assert {"alpha_strategy", "beta_strategy"} <= set(names) and "gamma_strategy" not in names
    assert "gamma_strategy" in fulmen.Fabric(accelerator="cpu", allow_plugins=["gamma"]).registry.names("strategy")


# ---------------------------------------------------------------------------- required plugins


def test_missing_required_plugin_stops_the_trainer_before_training(project, tmp_path):
    path = project('[require]\nfulmen-acme-tracker = ">=1.2"\n')
    with pytest.raises(FulmenPluginError) as info:
        trainer(tmp_path)
    message = str(info.value)
    assert (f"required plugin 'fulmen-acme-tracker' (fulmen-acme-tracker>=1.2, from {path}) is not installed; "
            "installed plugins: ") in message
    assert "Fix: pip install 'fulmen-acme-tracker>=1.2'" in message
    assert "fulmen plugins --check" in message


def test_missing_official_plugin_gets_its_pip_line(project, tmp_path, monkeypatch):
    monkeypatch.setenv("FULMEN_REQUIRE_PLUGINS", "tpu_thing>=1, xla>=9")
    with pytest.raises(FulmenPluginError) as info:
        fulmen.Fabric(accelerator="cpu")
    message = str(info.value)
    assert "required plugin 'tpu_thing' (tpu_thing>=1, from environment (FULMEN_REQUIRE_PLUGINS))" in message
    assert ("required plugin 'xla' (from environment (FULMEN_REQUIRE_PLUGINS)) needs fulmen-accelerator-xla>=9 but "
            "fulmen-accelerator-xla 0.1.0 is installed. Fix: pip install 'fulmen-accelerator-xla>=9'") in message


def test_required_plugin_with_the_wrong_version_names_requirement_and_installed(project, tmp_path, plugin_sites):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy", version="1.4.0"))
    path = project('[require]\nalpha = ">=2.0"\n')
    with pytest.raises(FulmenPluginError, match=(
        rf"required plugin 'alpha' \(from {path}\) needs fulmen-alpha>=2.0 but fulmen-alpha 1.4.0 is installed\. "
        r"Fix: pip install 'fulmen-alpha>=2.0'"
    )):
        trainer(tmp_path)


def test_required_fulmen_version_is_checked_too(project, tmp_path):
    project('[require]\nfulmen = ">=9"\n')
    with pytest.raises(FulmenPluginError, match=r"required fulmen>=9 \(from .*\) but found fulmen 0.1.0"):
        trainer(tmp_path)


def test_required_plugin_loads_with_autoload_off_and_outside_the_allow_list(project, tmp_path, plugin_sites, monkeypatch):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
                 plugin_dist(tmp_path, "fulmen-beta", "beta", "beta_strategy"))
    project('allow = ["beta"]\n[require]\nalpha = ">=1"\n')
    monkeypatch.setenv(policy.ENV_DISABLE_AUTOLOAD, "1")
    names = fulmen.Fabric(accelerator="cpu").registry.names("strategy")
    assert "alpha_strategy" in names and "beta_strategy" in names


def test_required_and_denied_plugin_is_a_contradiction(project, tmp_path, plugin_sites):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"))
    path = project('deny = ["alpha"]\n[require]\nalpha = ""\n')
    with pytest.raises(FulmenPluginError, match=rf"required plugin 'alpha' \(from {path}\) is also denied"):
        trainer(tmp_path)


def test_required_plugin_that_fails_to_import_raises_its_recorded_reason(project, tmp_path, plugin_sites):
    plugin_sites(plugin_dist(tmp_path, "fulmen-alpha", "alpha", "", source="raise ImportError('no backend here')\n"))
    project('[require]\nfulmen-alpha = ">=1"\n')
    with pytest.warns(FulmenPluginWarning):
        with pytest.raises(FulmenPluginError, match=(
            r"required plugin 'fulmen-alpha' \(from .*\) is installed \(fulmen-alpha 1.0.0\) but cannot be used: "
            r"import of alpha_cfg_plugin raised ImportError: no backend here"
        )):
            trainer(tmp_path)


# ---------------------------------------------------------------------------- defaults


def test_defaults_fill_in_what_the_user_left_unset(project, tmp_path):
    project('[defaults]\naccelerator = "cpu"\nstrategy = "single_device"\nprecision = "bf16-mixed"\nlogger = "csv"\n')
    t = quiet_trainer(tmp_path, accelerator="auto", enable_checkpointing=False)
    assert t.precision == "bf16-mixed"
    assert [type(logger).__name__ for logger in t.loggers] == ["CSVLogger"]
    assert fulmen.Fabric().precision.name == "bf16-mixed"
    # What the user passes wins over every default.
    assert quiet_trainer(tmp_path, precision="64-true", logger=False).precision == "64-true"
    assert quiet_trainer(tmp_path, precision="64-true", logger=False).loggers == []


def test_default_logger_false_means_no_logger_and_the_trainer_still_trains(project, tmp_path):
    project('[defaults]\nlogger = false\n')
    t = trainer(tmp_path, max_steps=2)
    assert t.loggers == []
    t.fit(BoringModule(), loader())
    assert t.global_step == 2


def test_environment_defaults_override_the_file(project, tmp_path, monkeypatch):
    project('[defaults]\nprecision = "bf16-mixed"\n')
    monkeypatch.setenv("FULMEN_DEFAULT_PRECISION", "64-true")
    assert trainer(tmp_path, logger=False).precision == "64-true"


def test_unknown_default_is_an_error_naming_its_source(project, tmp_path):
    path = project('[defaults]\nstrategy = "fsdpp"\n')
    with pytest.raises(FulmenConfigError, match=(
        rf"the default strategy 'fsdpp' set by {path} is not available: unknown strategy 'fsdpp'\. Available: "
    )):
        trainer(tmp_path)


# ---------------------------------------------------------------------------- layers


def test_installed_distribution_config_is_the_base_layer(project, tmp_path, plugin_sites):
    plugin_sites(
        config_dist(tmp_path, "acme-platform", '''
            deny = ["fulmen-strategy-deepspeed"]
            [require]
            fulmen-loggers = ">=0.1"
            [defaults]
            precision = "bf16-mixed"
            logger = false
        '''),
        plugin_dist(tmp_path, "fulmen-alpha", "alpha", "alpha_strategy"),
    )
    path = project('deny = ["alpha"]\n[require]\nfulmen-loggers = "<0.2"\n[defaults]\nprecision = "64-true"\n')
    cfg = plugin_config.active()
    assert cfg.sources == [
        "acme-platform 2.0.0 (fulmen.config entry point 'acme-platform')", str(path)]
    assert cfg.deny == {"fulmen-strategy-deepspeed", "alpha"}  # deny lists add up
    assert str(cfg.require["fulmen-loggers"].specifier) == "<0.2,>=0.1"  # every layer's requirement holds
    t = trainer(tmp_path)
    assert t.precision == "64-true" and t.loggers == []  # the project's default replaces the platform's
    names = t.fabric.registry.names("strategy")
    assert "alpha_strategy" not in names and not any(n.startswith("deepspeed") for n in names)


def test_no_configuration_changes_nothing(project, tmp_path):
    assert plugin_config.active().sources == []
    t = trainer(tmp_path)
    assert t.precision == "32-true"
    assert [type(logger).__name__ for logger in t.loggers] == ["CSVLogger"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FulmenPluginWarning)
        fulmen.Fabric(accelerator="cpu")
