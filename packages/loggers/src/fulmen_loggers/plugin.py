"""Entry point of fulmen-loggers in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric (and when the ``fulmen`` command
starts), after checking this distribution's requirement on ``fulmen``. It stays import-light:
the backend libraries are imported on the logger's delivery thread, when something is logged.

The names are registered whether or not their backend is installed, so that
``fulmen plugins`` can list a missing one as unavailable with the line that installs it, and
``Trainer(logger="mlflow")`` raises with that same line instead of "unknown logger".
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Optional

from fulmen.hookspecs import hookimpl

# name → (module to import, what it is, logger class, pip requirement, description)
BACKENDS = {
    "mlflow": (
        "mlflow",
        "MLflow",
        "fulmen_loggers.mlflow_logger:MLflowLogger",
        "fulmen-loggers[mlflow]",
        "MLflow tracking server or sqlite store (MLFLOW_TRACKING_URI); never blocks, spools while unreachable",
    ),
    "wandb": (
        "wandb",
        "Weights & Biases",
        "fulmen_loggers.wandb_logger:WandbLogger",
        "fulmen-loggers[wandb]",
        "Weights & Biases, online or offline (WANDB_PROJECT, WANDB_MODE); never blocks, spools while unreachable",
    ),
    "tensorboard": (
        "tensorboard",
        "TensorBoard",
        "fulmen_loggers.tensorboard_logger:TensorBoardLogger",
        "fulmen-loggers[tensorboard]",
        "TensorBoard event files under <root>/fulmen_logs/version_N, written off the training thread",
    ),
    "clearml": (
        "clearml",
        "ClearML",
        "fulmen_loggers.clearml_logger:ClearMLLogger",
        "fulmen-loggers[clearml]",
        "ClearML task, on a server or offline (CLEARML_OFFLINE_MODE=1); never blocks, spools while unreachable",
    ),
    "comet": (
        "comet_ml",
        "Comet",
        "fulmen_loggers.comet_logger:CometLogger",
        "fulmen-loggers[comet]",
        "Comet experiment, online or offline (COMET_API_KEY, online=False); never blocks, spools while unreachable",
    ),
}


def unavailable_reason(name: str) -> Optional[str]:
    """Why logger ``name`` cannot be used here (its library is missing), or None."""
    module, label, _, requirement, _ = BACKENDS[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a half-removed package, or a module blocked in sys.modules
        found = False
    if found:
        return None
    return f"the {label} library ({module!r}) is not installed: pip install '{requirement}'"


def _factory(name: str):
    _, label, target, _, _ = BACKENDS[name]
    module_name, _, class_name = target.partition(":")

    def factory(**options: Any):
        reason = unavailable_reason(name)
        if reason is not None:
            from fulmen.errors import FulmenPluginError

            raise FulmenPluginError(f"logger {name!r} is unavailable: {reason}")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**options)

    factory.__name__ = class_name
    factory.unavailable_reason = lambda: unavailable_reason(name)  # read by `fulmen plugins`
    return factory


@hookimpl
def register_loggers(register):
    """Register ``mlflow``, ``wandb``, ``tensorboard``, ``clearml`` and ``comet`` as logger names, installed or not
    (see the module docstring for why)."""
    for name, (_, _, _, _, description) in BACKENDS.items():
        register(name, _factory(name), description)


@hookimpl
def register_cli_commands(register):
    """Add ``fulmen loggers`` (its ``replay`` subcommand) to the ``fulmen`` command."""
    from fulmen_loggers.replay import configure_cli

    register("loggers", configure_cli, "fulmen-loggers tools (replay records a run could not deliver)")
