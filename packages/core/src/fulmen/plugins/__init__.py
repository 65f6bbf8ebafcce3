"""Plugin discovery, the per-Trainer plugin manager and the name registry."""

from fulmen.hookspecs import hookimpl

__all__ = ["hookimpl"]
