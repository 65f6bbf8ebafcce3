"""MLflow, Weights & Biases and TensorBoard loggers for fulmen."""

__version__ = "0.1.0"
