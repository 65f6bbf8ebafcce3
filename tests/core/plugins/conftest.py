"""Fixtures of the plugin tests; the helpers they use live in ``plugin_helpers.py``."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Dict

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # ``import plugin_helpers`` from the tests

from fulmen.plugins import discovery  # noqa: E402
from plugin_helpers import FULMEN_ENV  # noqa: E402


@pytest.fixture
def clean_plugin_env(monkeypatch):
    """No allow/deny/disable variables leak in from the developer's shell."""
    for var in FULMEN_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def plugin_sites(clean_plugin_env):
    """``activate(*sites)``: put directories of installed plugins first on ``sys.path`` (in
    the given order) and rescan; afterwards restore ``sys.path``, forget their modules and
    rescan, so later tests see only the venv's plugins again."""
    saved_path = list(sys.path)
    added: list = []

    def activate(*sites: Path) -> Dict[str, discovery.PluginRecord]:
        for site in reversed(sites):
            sys.path.insert(0, str(site))
            added.append(str(site))
        importlib.invalidate_caches()
        return discovery.rescan()

    yield activate
    sys.path[:] = saved_path
    for mod_name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if any(file.startswith(site) for site in added):
            del sys.modules[mod_name]
    importlib.invalidate_caches()
    discovery.rescan()
