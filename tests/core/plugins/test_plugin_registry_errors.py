"""Unknown names: the error lists what is available and, for names of the official packages,
what to install or why the installed package cannot serve them.

The "official package not installed" wording is checked in ``test_core_dependencies.py``,
in an interpreter where only fulmen's declared dependencies are importable.
"""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from helpers import quiet_trainer

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.plugins.registry import official_provider


def _message(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------- plain unknown names

@pytest.mark.parametrize(
    "kwargs,kind,some_available",
    [
        (dict(strategy="warp_drive"), "strategy", ["'single_device'"]),
        (dict(accelerator="abacus"), "accelerator", ["'cpu'", "'cuda'", "'mps'"]),
        (dict(precision="7-bit"), "precision", ["'32-true'", "'bf16-mixed'", "'16-mixed'"]),
    ],
)
def test_unknown_strategy_accelerator_precision_list_the_available_names(kwargs, kind, some_available, clean_plugin_env):
    name = next(iter(kwargs.values()))
    with pytest.raises(FulmenConfigError) as excinfo:
        fulmen.Fabric(**{"accelerator": "cpu", **kwargs})
    message = _message(excinfo)
    assert message.startswith(f"unknown {kind} {name!r}. Available: ")
    for available in some_available:
        assert available in message
    assert "pip install" not in message  # no official package claims these names


def test_unknown_logger_and_callback_names_list_the_available_names(tmp_path, clean_plugin_env):
    with pytest.raises(FulmenConfigError, match=r"unknown logger 'papyrus'\. Available: .*'csv'"):
        quiet_trainer(tmp_path, logger="papyrus")
    with pytest.raises(FulmenConfigError, match=r"unknown logger 'papyrus'\. Available: .*'csv'"):
        fulmen.Fabric(accelerator="cpu", loggers=["papyrus"])
    with pytest.raises(FulmenConfigError) as excinfo:
        quiet_trainer(tmp_path, callbacks=["telepathy"])
    for name in ("early_stopping", "lr_monitor", "model_checkpoint", "timer"):
        assert repr(name) in _message(excinfo)


def test_unknown_plugins_entry_lists_checkpoint_io_and_environments(clean_plugin_env):
    with pytest.raises(FulmenConfigError, match=r"plugins=\['carrier_pigeon'\].*'torch'.*'local'"):
        fulmen.Fabric(accelerator="cpu", plugins=["carrier_pigeon"])


def test_registered_names_resolve_to_what_was_asked(tmp_path, clean_plugin_env):
    """The counterpart of the errors: every built-in name given by string works."""
    fabric = fulmen.Fabric(accelerator="cpu", strategy="single_device", precision="64-true", plugins=["torch", "local"])
    assert type(fabric.strategy).__name__ == "SingleDeviceStrategy"
    assert type(fabric.precision).__name__ == "DoublePrecision"
    trainer = quiet_trainer(tmp_path, logger="csv", callbacks=["lr_monitor"])
    assert type(trainer.logger).__name__ == "CSVLogger"
    assert any(type(c).__name__ == "LearningRateMonitor" for c in trainer.callbacks)


# ---------------------------------------------------------------------------- official names

# (argument, name, requirement printed in the pip line)
OFFICIAL_NAMES = [
    ("strategy", "deepspeed_stage_2", "fulmen-strategy-deepspeed"),
    ("strategy", "deepspeed_stage_3_offload", "fulmen-strategy-deepspeed"),
    ("strategy", "fsdp", "fulmen-strategy-fsdp"),
    ("strategy", "fsdp_cpu_offload", "fulmen-strategy-fsdp"),
    ("strategy", "hsdp", "fulmen-strategy-fsdp"),
    ("strategy", "xla_fsdp", "fulmen-accelerator-xla"),
    ("accelerator", "xla", "fulmen-accelerator-xla"),
    ("accelerator", "tpu", "fulmen-accelerator-xla"),
    ("logger", "mlflow", "fulmen-loggers[mlflow]"),
    ("logger", "wandb", "fulmen-loggers[wandb]"),
    ("logger", "tensorboard", "fulmen-loggers[tensorboard]"),
]


def _build(tmp_path, argument, name, **kwargs):
    if argument == "logger":
        return quiet_trainer(tmp_path, logger=name, **kwargs)
    return quiet_trainer(tmp_path, **{argument: name}, **kwargs)


@pytest.mark.parametrize("argument,name,requirement", OFFICIAL_NAMES, ids=[n for _, n, _ in OFFICIAL_NAMES])
def test_official_name_not_registered_by_the_installed_package_says_upgrade(
    argument, name, requirement, tmp_path, clean_plugin_env
):
    dist = requirement.split("[")[0]
    probe = fulmen.Fabric(accelerator="cpu").registry
    if name in probe.names(argument):
        pytest.skip(f"{dist} now registers {name!r}; the error no longer applies")
    assert official_provider(argument, name) == requirement
    with pytest.raises(FulmenConfigError) as excinfo:
        _build(tmp_path, argument, name)
    message = _message(excinfo)
    assert message.startswith(f"unknown {argument} {name!r}. Available: ")
    assert (
        f"{name!r} belongs to {dist}, which is installed ({metadata.version(dist)}) but does not register "
        f"it; upgrade it: pip install -U '{requirement}'"
    ) in message


@pytest.mark.parametrize("how", ["plugin-name", "distribution", "environment"])
@pytest.mark.parametrize(
    "argument,name,plugin,dist",
    [
        ("strategy", "fsdp", "fsdp", "fulmen-strategy-fsdp"),
        ("strategy", "deepspeed_stage_2", "deepspeed", "fulmen-strategy-deepspeed"),
        ("logger", "mlflow", "loggers", "fulmen-loggers"),
        ("accelerator", "xla", "xla", "fulmen-accelerator-xla"),
    ],
    ids=["fsdp", "deepspeed_stage_2", "mlflow", "xla"],
)
def test_official_name_of_a_denied_package_says_it_was_denied(
    how, argument, name, plugin, dist, tmp_path, clean_plugin_env
):
    if how == "environment":
        clean_plugin_env.setenv("FULMEN_PLUGINS_DENY", dist)
        kwargs = {}
    else:
        kwargs = {"deny_plugins": [plugin if how == "plugin-name" else dist]}
    with pytest.raises(FulmenConfigError) as excinfo:
        _build(tmp_path, argument, name, **kwargs)
    message = _message(excinfo)
    assert f"{name!r} comes from {dist}, which could not be used: denied by the deny list" in message
    assert "pip install" not in message  # installing it again would not help


def test_official_name_outside_the_allow_list_says_so(tmp_path, clean_plugin_env):
    with pytest.raises(FulmenConfigError, match=re.escape(
        "'fsdp' comes from fulmen-strategy-fsdp, which could not be used: not in the allow list"
    )):
        quiet_trainer(tmp_path, strategy="fsdp", allow_plugins=["loggers"])
