"""The contract checks fulmen ships (``fulmen.testing``), run against this package's
classes by the names users type. Each base class turns every rule into its own test."""

from fulmen.testing import LoggerConformance, PrecisionConformance, StrategyConformance

from fulmen_plugin_template.logger import read_metrics


class TestTimedSingleDeviceStrategy(StrategyConformance):
    strategy = "timed_single_device"
    # A data-parallel strategy would set devices = 2 (or more): the suite then starts the
    # ranks through the strategy's own launcher and compares them with one device.


class TestTF32Precision(PrecisionConformance):
    precision = "32-tf32"
    # On a GPU, TF32 matmuls round to 10 bits of mantissa; give them room there.
    atol = 1e-5


class TestJSONLinesLogger(LoggerConformance):
    logger = "jsonl"

    def read_metrics(self, logger):
        return read_metrics(logger.metrics_file)
