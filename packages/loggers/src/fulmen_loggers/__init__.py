"""MLflow, Weights & Biases, TensorBoard, ClearML and Comet loggers for fulmen.

``Trainer(logger="mlflow")`` (or ``"wandb"``, ``"tensorboard"``, ``"clearml"``, ``"comet"``, or
the classes below) logs
metrics, hyperparameters and checkpoints without ever making a training step wait for the
tracker: calls run on a background thread, and records the tracker could not take are kept
in an append-only spool in the run directory until it can (``fulmen loggers replay DIR``
sends them after the job ended). Importing this package imports no backend library.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MLflowLogger": "fulmen_loggers.mlflow_logger",
    "WandbLogger": "fulmen_loggers.wandb_logger",
    "TensorBoardLogger": "fulmen_loggers.tensorboard_logger",
    "ClearMLLogger": "fulmen_loggers.clearml_logger",
    "CometLogger": "fulmen_loggers.comet_logger",
    "flatten_params": "fulmen_loggers._hyperparams",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen_loggers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
