"""Test classes to subclass: set a few class attributes, and pytest runs every rule of the
contract as its own test.

    from fulmen.testing import StrategyConformance

    class TestMyStrategy(StrategyConformance):
        strategy = "my_strategy"        # registered name, "module:attr", a class or a factory
        devices = 2                     # ranks; >1 runs in new processes via your launcher

The base classes are not collected themselves (their names do not start with ``Test``).
Class attributes rather than fixtures keep a subclass to a few lines and let the expensive
run (training the reference model) happen once per class.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import pytest

from fulmen.testing import accelerator as _accelerator
from fulmen.testing import checkpoint_io as _checkpoint_io
from fulmen.testing import environment as _environment
from fulmen.testing import logger as _logger
from fulmen.testing import precision as _precision
from fulmen.testing import strategy as _strategy


def _required(cls: type, attr: str) -> Any:
    value = getattr(cls, attr, None)
    if value is None:
        raise TypeError(f"{cls.__name__} must set the class attribute {attr!r} (see {cls.__mro__[1].__name__})")
    return value


class StrategyConformance:
    """Layout, collectives, training equivalence to one device, exact save/restore."""

    strategy: Any = None
    devices: int = 1
    accelerator: str = "cpu"
    atol: float = 1e-5
    rtol: float = 1e-4
    epochs: int = 2
    timeout: float = _strategy.DEFAULT_TIMEOUT

    @pytest.fixture(scope="class")
    @classmethod
    def strategy_report(cls, tmp_path_factory) -> _strategy.StrategyReport:
        """The reference run, once per class; each test judges one rule of it."""
        return _strategy.run_strategy(
            _required(cls, "strategy"), cls.devices, cls.accelerator, None,
            tmp_path_factory.mktemp("strategy"), cls.epochs, cls.timeout,
        )

    def test_process_layout(self, strategy_report):
        """Ranks ``0..devices-1`` each run once, agree on ``world_size``, and only rank 0 is global zero."""
        _strategy.check_layout(strategy_report)

    def test_collectives(self, strategy_report):
        """``all_reduce``, ``all_gather``, ``broadcast``, ``all_gather_object`` and ``barrier`` give the expected
        results on every rank."""
        _strategy.check_collectives(strategy_report)

    def test_trains_like_one_device(self, strategy_report):
        """Training the reference problem ends, on every rank, within ``atol``/``rtol`` of one device on the
        global batches."""
        _strategy.check_training(strategy_report, self.atol, self.rtol, self.epochs)

    def test_saves_and_restores_exact_state(self, strategy_report):
        """``fabric.save`` then ``fabric.load`` restores model and optimizer bit for bit, and both continue
        identically."""
        _strategy.check_state_round_trip(strategy_report, self.epochs)


class AcceleratorConformance:
    """Cheap class-level queries, device parsing, device math, training on it."""

    accelerator: Any = None
    atol: float = 1e-4
    rtol: float = 1e-3

    def test_class_api(self):
        """``name``, ``device_type``, ``auto_priority``, ``is_available()`` and ``device_count()`` answer on the
        class, cheaply."""
        _accelerator.check_class_api(_required(type(self), "accelerator"))

    def test_devices(self):
        """Where available: ``parse_devices`` accepts good values and refuses bad ones; tensor math on the device
        works."""
        _accelerator.check_devices(_required(type(self), "accelerator"))

    def test_trains_like_cpu(self, tmp_path):
        """The reference problem trained on one device of it ends close to the CPU result."""
        accelerator = _required(type(self), "accelerator")
        if not isinstance(accelerator, str) or ":" in accelerator:
            pytest.skip("training through Fabric needs the accelerator's registered name")
        _accelerator.check_training_on_device(accelerator, self.atol, self.rtol, tmp_path)


class PrecisionConformance:
    """Hook bundle, training close to float32, exact checkpoints, state round trip."""

    precision: Any = None
    accelerator: str = "cpu"
    atol: float = 1e-5
    rtol: float = 1e-4

    @pytest.fixture(autouse=True)
    def _supported(self):
        reason = _precision.unsupported_reason(_required(type(self), "precision"), self.accelerator)
        if reason:
            pytest.skip(f"precision {type(self).precision!r} on {self.accelerator}: {reason}")

    def test_hooks(self):
        """The context managers restore the default dtype; ``convert_input`` keeps structure, integers and non-
        tensors."""
        _precision.check_hooks(type(self).precision)

    def test_state_dict_round_trip(self):
        """``state_dict()`` loaded into a fresh instance comes back unchanged."""
        _precision.check_state_dict(type(self).precision, self.accelerator)

    def test_trains_close_to_float32(self, tmp_path):
        """Training is finite, the loss falls, parameters end near float32's, and save/load is exact."""
        _precision.check_training_and_state(type(self).precision, self.accelerator, self.atol, self.rtol, tmp_path)


class LoggerConformance:
    """Every step stored, survives an error in training, resumable identity.

    Subclasses set ``logger`` and implement ``read_metrics(self, logger)`` returning
    ``{step: {name: value}}`` of what the logger stored (called after ``finalize``).
    """

    logger: Any = None

    def read_metrics(self, logger: Any) -> Mapping[int, Mapping[str, float]]:
        """Return what ``logger`` stored as ``{step: {name: value}}`` (called after ``finalize``);
        implement it in your subclass, since only you know where your logger writes."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement read_metrics(self, logger) -> {{step: {{name: value}}}}"
        )

    def test_identity(self, tmp_path):
        """``name`` is a string, ``version`` an int, a string or None, ``log_dir`` a string or None."""
        _logger.check_identity(_required(type(self), "logger"), tmp_path)

    def test_records_every_step(self, tmp_path):
        """Every step given to ``log_metrics`` is stored with every value, names that appear on some steps only
        included."""
        _logger.check_records_every_step(_required(type(self), "logger"), self.read_metrics, tmp_path)

    def test_survives_an_error_in_training(self, tmp_path):
        """After training raises, ``finalize('failed')`` keeps every step logged before and does not raise;
        ``save()`` still works."""
        _logger.check_survives_error(_required(type(self), "logger"), self.read_metrics, tmp_path)

    def test_state_round_trip(self, tmp_path):
        """A fresh logger given ``state_dict()`` reports the same ``version``, so a resumed run writes to the
        same place."""
        _logger.check_state_round_trip(_required(type(self), "logger"), tmp_path)


class ClusterEnvironmentConformance:
    """Detection, values read from the scheduler's variables, priority among the others."""

    environment: Any = None
    variables: Dict[str, str] = {}
    expected: Dict[str, Any] = {}
    always_detects: bool = False  # a fallback such as "local" that matches everywhere

    def test_detection(self):
        """``detect()`` is False with no scheduler variable set (unless ``always_detects``) and True under
        ``variables``."""
        _environment.check_detection(_required(type(self), "environment"), self.variables, self.always_detects)

    def test_values(self):
        """Under ``variables`` every value equals ``expected``, ranks are consistent ints, and the object pickles."""
        _environment.check_values(_required(type(self), "environment"), self.variables, self.expected)

    def test_detection_priority(self):
        """fulmen's detection, trying every registered environment by priority, picks this one under ``variables``."""
        environment = _required(type(self), "environment")
        if not isinstance(environment, str) or ":" in environment:
            pytest.skip("the priority check needs the environment's registered name")
        _environment.check_priority(environment, self.variables)


class CheckpointIOConformance:
    """Exact round trip, snapshot semantics, overwrite, atomic failure, remove."""

    checkpoint_io: Any = None

    def test_round_trip(self, tmp_path):
        """A checkpoint of many dtypes and plain values loads back exactly, as it was when saved."""
        _checkpoint_io.check_round_trip(_required(type(self), "checkpoint_io"), tmp_path)

    def test_overwrite_and_remove(self, tmp_path):
        """Saving over a path replaces it; removing deletes, twice is quiet; loading a missing path raises."""
        _checkpoint_io.check_overwrite_and_remove(_required(type(self), "checkpoint_io"), tmp_path)

    def test_failed_write_is_atomic(self, tmp_path):
        """A write that fails half-way raises and leaves the previous file intact, with no partial file beside it."""
        _checkpoint_io.check_atomic(_required(type(self), "checkpoint_io"), tmp_path)


CONFORMANCE_BASES = (
    StrategyConformance,
    AcceleratorConformance,
    PrecisionConformance,
    LoggerConformance,
    ClusterEnvironmentConformance,
    CheckpointIOConformance,
)
