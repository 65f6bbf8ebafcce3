"""``fulmen.testing``: the conformance suite for plugins (strategies, accelerators,
precisions, loggers, cluster environments, checkpoint IO).

Enable it in a test suite, opt-in (it is never autoloaded)::

    # conftest.py at the root of your tests (or in a test module)
    pytest_plugins = ["fulmen.testing"]

Then either subclass a suite, one test per rule::

    from fulmen.testing import StrategyConformance

    class TestMyStrategy(StrategyConformance):
        strategy = "my_strategy"  # registered name, "module:attr", a class or a factory
        devices = 2

or call a check through the fixture, for example parametrized over your names::

    @pytest.mark.parametrize("name", ["my_precision", "my_precision_fast"])
    def test_precisions(fulmen_conformance, name):
        fulmen_conformance.check_precision(name, atol=5e-2)

or call the plain functions (``check_strategy``, ``check_precision``, ...), which raise
``ConformanceError`` (an ``AssertionError``) naming the broken rule. Each module's
docstring states its rules: ``fulmen.testing.strategy``, ``.accelerator``, ``.precision``,
``.logger``, ``.environment``, ``.checkpoint_io``.
"""

from fulmen.testing._common import ConformanceError, ConformanceSkip
from fulmen.testing.accelerator import check_accelerator
from fulmen.testing.checkpoint_io import check_checkpoint_io
from fulmen.testing.environment import check_cluster_environment
from fulmen.testing.logger import check_logger
from fulmen.testing.plugin import (  # noqa: F401  (pytest finds hooks and fixtures here)
    Conformance,
    fulmen_clean_env,
    fulmen_conformance,
    fulmen_registry,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
)
from fulmen.testing.precision import check_precision
from fulmen.testing.strategy import StrategyReport, check_strategy, run_strategy
from fulmen.testing.suites import (
    AcceleratorConformance,
    CheckpointIOConformance,
    ClusterEnvironmentConformance,
    LoggerConformance,
    PrecisionConformance,
    StrategyConformance,
)

__all__ = [
    "AcceleratorConformance",
    "CheckpointIOConformance",
    "ClusterEnvironmentConformance",
    "Conformance",
    "ConformanceError",
    "ConformanceSkip",
    "LoggerConformance",
    "PrecisionConformance",
    "StrategyConformance",
    "StrategyReport",
    "check_accelerator",
    "check_checkpoint_io",
    "check_cluster_environment",
    "check_logger",
    "check_precision",
    "check_strategy",
    "run_strategy",
]
