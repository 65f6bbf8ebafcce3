"""fulmen's strategy conformance suite (``fulmen.testing``) for ``fsdp`` on 2 processes:
layout, collectives, training like one device, exact save/restore through Fabric."""

from __future__ import annotations

from fulmen.testing import StrategyConformance


class TestFSDPConformance(StrategyConformance):
    strategy = "fsdp"
    devices = 2
