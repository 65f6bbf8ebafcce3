"""DeepSpeed ZeRO strategies for fulmen."""

__version__ = "0.1.0"
