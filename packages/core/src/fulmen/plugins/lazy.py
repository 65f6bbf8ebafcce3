"""Registering a class by its import path, so that discovery imports nothing heavy.

Plugins (the core's built-ins too) register ``lazy_factory("pkg.module:Class")``: the module
is imported only when a user asks for the name, and ``factory.resolve()`` reaches the class
for its ``is_available``/``auto_priority``/``detect`` without building an object.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_factory(path: str, **preset: Any) -> Callable[..., Any]:
    """A factory for ``module:Class``; keyword options given at creation override ``preset``."""
    module_name, _, class_name = path.partition(":")

    def resolve():
        return getattr(importlib.import_module(module_name), class_name)

    def factory(**options):
        return resolve()(**{**preset, **options})

    factory.__name__ = class_name
    factory.resolve = resolve
    return factory
