from fulmen.callbacks.base import Callback
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.lr_monitor import LearningRateMonitor
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.callbacks.model_summary import ModelSummary
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.callbacks.progress_bar import ProgressBar
from fulmen.callbacks.timer import Timer

__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "Timer",
]
