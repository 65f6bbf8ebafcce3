from fulmen.precision.base import Precision
from fulmen.precision.mixed import MixedPrecision
from fulmen.precision.true_dtype import DoublePrecision, HalfPrecision

__all__ = ["Precision", "MixedPrecision", "HalfPrecision", "DoublePrecision"]
