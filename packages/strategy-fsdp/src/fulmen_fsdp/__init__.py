"""Fully Sharded Data Parallel (FSDP2) strategies for fulmen."""

__version__ = "0.1.0"
