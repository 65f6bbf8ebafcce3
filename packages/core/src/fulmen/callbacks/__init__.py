from fulmen.callbacks.base import Callback
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.lr_monitor import LearningRateMonitor
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.callbacks.progress_bar import ProgressBar
from fulmen.callbacks.timer import Timer

# Training-schedule callbacks load on first access: most runs use none of them.
_LAZY = {
    "BaseFinetuning": "fulmen.callbacks.finetuning",
    "BackboneFinetuning": "fulmen.callbacks.finetuning",
    "StochasticWeightAveraging": "fulmen.callbacks.swa",
    "GradientAccumulationScheduler": "fulmen.callbacks.accumulation_scheduler",
    "EMAWeightAveraging": "fulmen.callbacks.ema",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen.callbacks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "Callback",
    "EMAWeightAveraging",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "StochasticWeightAveraging",
    "Timer",
]
