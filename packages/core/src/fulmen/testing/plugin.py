"""The pytest side of ``fulmen.testing``: hooks and fixtures, active once a test suite says
``pytest_plugins = ["fulmen.testing"]`` (fulmen declares no ``pytest11`` entry point, so
installing fulmen changes nobody's test run).

* a report-header line with fulmen's version and the plugins this environment loads;
* the ``fulmen_conformance`` marker, put on every test of a ``*Conformance`` subclass
  (``pytest -m fulmen_conformance`` runs just those);
* fixtures: ``fulmen_conformance`` (every check, bound to a temporary directory),
  ``fulmen_registry`` (what a Trainer created now could resolve) and ``fulmen_clean_env``
  (no FULMEN_* plugin/config variable and no scheduler variable leaks into a test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import pytest

MARKER = "fulmen_conformance"


def pytest_configure(config) -> None:
    """Declare the ``fulmen_conformance`` marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line("markers", f"{MARKER}: a fulmen plugin conformance check (fulmen.testing)")


def pytest_report_header(config):
    """One header line: fulmen's version and each plugin this environment discovered, with its status."""
    from fulmen.plugins import discovery

    loaded = []
    for record in discovery.records().values():
        loaded.append(f"{record.name}-{record.version or '?'}" + ("" if record.status in ("found", "loaded") else f" ({record.status})"))
    return f"fulmen {discovery.fulmen_version()}, plugins: {', '.join(loaded) or 'none'}"


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test of a ``*Conformance`` subclass ``fulmen_conformance`` (``pytest -m fulmen_conformance``)."""
    from fulmen.testing.suites import CONFORMANCE_BASES

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, CONFORMANCE_BASES):
            item.add_marker(MARKER)


class Conformance:
    """The checks of ``fulmen.testing`` with their working directories filled in."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def _dir(self, name: str) -> Path:
        path = self.tmp_path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check_strategy(self, strategy: Any, devices: int = 1, accelerator: str = "cpu", atol: float = 1e-5,
                       rtol: float = 1e-4, timeout: float = 300):
        """Every strategy rule (:func:`fulmen.testing.check_strategy`); returns the report of the run."""
        from fulmen.testing.strategy import check_strategy

        return check_strategy(strategy, devices, accelerator, self._dir("strategy"), atol, rtol, timeout=timeout)

    def check_accelerator(self, accelerator: Any, atol: float = 1e-4, rtol: float = 1e-3) -> None:
        """Every accelerator rule (:func:`fulmen.testing.check_accelerator`)."""
        from fulmen.testing.accelerator import check_accelerator

        check_accelerator(accelerator, atol, rtol, self._dir("accelerator"))

    def check_precision(self, precision: Any, accelerator: str = "cpu", atol: float = 1e-5, rtol: float = 1e-4) -> None:
        """Every precision rule (:func:`fulmen.testing.check_precision`); skipped where the accelerator refuses it."""
        from fulmen.testing.precision import check_precision

        check_precision(precision, accelerator, atol, rtol, self._dir("precision"))

    def check_logger(self, logger: Any, read_metrics) -> None:
        """Every logger rule (:func:`fulmen.testing.check_logger`); ``read_metrics(logger)`` returns
        ``{step: {name: value}}`` of what the logger stored."""
        from fulmen.testing.logger import check_logger

        check_logger(logger, read_metrics, self._dir("logger"))

    def check_cluster_environment(self, environment: Any, variables: Mapping[str, str],
                                  expected: Optional[Mapping[str, Any]] = None, always_detects: bool = False) -> None:
        """Every cluster environment rule (:func:`fulmen.testing.check_cluster_environment`)."""
        from fulmen.testing.environment import check_cluster_environment

        check_cluster_environment(environment, variables, expected, always_detects)

    def check_checkpoint_io(self, checkpoint_io: Any) -> None:
        """Every checkpoint IO rule (:func:`fulmen.testing.check_checkpoint_io`)."""
        from fulmen.testing.checkpoint_io import check_checkpoint_io

        check_checkpoint_io(checkpoint_io, self._dir("checkpoint_io"))


@pytest.fixture
def fulmen_conformance(tmp_path) -> Conformance:
    """``fulmen_conformance.check_strategy("my_strategy")`` and the other checks."""
    return Conformance(tmp_path)


@pytest.fixture
def fulmen_registry():
    """The registry a Trainer created now would see: ``fulmen_registry.names("strategy")``."""
    from fulmen.plugins import manager

    return manager.build().registry


@pytest.fixture
def fulmen_clean_env(monkeypatch):
    """Remove fulmen's plugin/configuration variables and every scheduler variable."""
    from fulmen.testing.environment import RENDEZVOUS, SCHEDULER_PREFIXES

    for name in list(os.environ):
        if name.startswith(("FULMEN_PLUGINS_", "FULMEN_DEFAULT_", *SCHEDULER_PREFIXES)) or name in RENDEZVOUS or name in (
            "FULMEN_DISABLE_PLUGIN_AUTOLOAD", "FULMEN_CONFIG", "FULMEN_REQUIRE_PLUGINS", "FULMEN_TRACE_PLUGINS",
        ):
            monkeypatch.delenv(name)
    return monkeypatch
