"""fulmen's plugin conformance suite (``fulmen.testing``) against this package, as a third
party would run it. ``test_xla_conformance.py`` runs this file in its own pytest process
with ``PJRT_DEVICE=CPU`` and ``CPU_NUM_DEVICES=2``: setting those in the main test process
would make ``accelerator="auto"`` choose XLA for every other test there."""

from fulmen.testing import AcceleratorConformance, StrategyConformance


class TestXLAAccelerator(AcceleratorConformance):
    accelerator = "xla"


class TestSingleXLA(StrategyConformance):
    strategy = "single_xla"
    accelerator = "xla"


class TestXLATwoProcesses(StrategyConformance):
    strategy = "xla"
    accelerator = "xla"
    devices = 2
