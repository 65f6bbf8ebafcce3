"""The command-line tests need fulmen[cli] (jsonargparse); without it they are skipped, saying
how to get them (``nox -s tests`` and ``nox -s xla`` install it)."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("jsonargparse") is not None:
        return
    skip = pytest.mark.skip(reason='needs fulmen[cli] (pip install "fulmen[cli]"; nox -s tests installs it)')
    for item in items:
        if "tests/core/cli/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
