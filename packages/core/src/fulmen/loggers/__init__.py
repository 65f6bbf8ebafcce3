from fulmen.loggers.base import Logger
from fulmen.loggers.csv_logger import CSVLogger

__all__ = ["Logger", "CSVLogger"]
