"""torch-xla (TPU and PJRT CPU) accelerator for fulmen."""

__version__ = "0.1.0"
