from fulmen.strategies.base import Strategy
from fulmen.strategies.capabilities import SupportsNoBackwardSync
from fulmen.strategies.single_device import SingleDeviceStrategy

__all__ = ["Strategy", "SingleDeviceStrategy", "SupportsNoBackwardSync"]
