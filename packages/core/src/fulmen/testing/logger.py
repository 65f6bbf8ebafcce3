"""Logger conformance. The author supplies how to make the logger and how to read back what
it stored (``read_metrics(logger) -> {step: {name: value}}``, called after ``finalize``),
since only they know where it writes (a file, a local run directory, a mock server).

* ``name`` is a string, ``version`` an int, a string or None, ``log_dir`` a string or None;
* every step given to ``log_metrics`` is stored with every value (including names that
  appear only on some steps), after ``log_hyperparams`` with nested and ``None`` values;
* when training raises, the Trainer's ``finalize("failed")`` stores every step logged
  before the error and does not raise, and a later ``save()`` (a flush after the error)
  still works;
* ``state_dict()`` is a dict, and a fresh logger given it reports the same ``version``
  (so a resumed run writes to the same place).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from fulmen.testing._common import factory_of, fail

ReadMetrics = Callable[[Any], Mapping[int, Mapping[str, float]]]


def make_logger(logger: Any, save_dir: os.PathLike) -> Any:
    """A fresh logger writing under ``save_dir`` (passed as ``save_dir=`` when the factory takes it)."""
    from fulmen.loggers.base import Logger

    factory = factory_of("logger", logger, Logger)
    try:
        return factory(save_dir=str(save_dir))
    except TypeError:  # a logger without a local directory (its settings come from elsewhere)
        return factory()


def _expected_series(steps: int) -> Dict[int, Dict[str, float]]:
    series = {}
    for step in range(steps):
        metrics = {"loss": 1.0 / (step + 1), "lr": 0.1}
        if step % 10 == 0:
            metrics["val_acc"] = step / 100.0
        series[step] = metrics
    return series


def _compare(spec: Any, rule: str, expected: Mapping[int, Mapping[str, float]], stored: Any) -> None:
    if not isinstance(stored, Mapping):
        raise fail("logger", spec, "read_metrics returns {step: {name: value}}", f"got {type(stored).__name__}")
    stored = {int(k): v for k, v in stored.items()}
    missing = [step for step in expected if step not in stored]
    if missing:
        raise fail("logger", spec, rule, f"{len(missing)} of {len(expected)} steps are missing, first: {missing[:10]}")
    for step, metrics in expected.items():
        for name, value in metrics.items():
            got = stored[step].get(name)
            if got is None or not math.isclose(float(got), float(value), rel_tol=1e-6, abs_tol=1e-9):
                raise fail("logger", spec, rule, f"step {step}: {name} = {value!r} was logged, {got!r} was stored")


def check_identity(logger: Any, save_dir: os.PathLike) -> None:
    """The identity rule: ``name`` is a string, ``version`` an int, a string or None, ``log_dir`` a string or None."""
    instance = make_logger(logger, save_dir)
    if not isinstance(instance.name, str):
        raise fail("logger", logger, "name is a string", f"got {instance.name!r}")
    if not (instance.version is None or isinstance(instance.version, (int, str))):
        raise fail("logger", logger, "version is an int, a string or None", f"got {instance.version!r}")
    if not (instance.log_dir is None or isinstance(instance.log_dir, str)):
        raise fail("logger", logger, "log_dir is a string or None", f"got {instance.log_dir!r}")


def check_records_every_step(logger: Any, read_metrics: ReadMetrics, save_dir: os.PathLike, steps: int = 100) -> None:
    """The storage rule: every step logged is stored with every value, after hyperparameters with nested values."""
    instance = make_logger(logger, save_dir)
    instance.log_hyperparams({"lr": 0.1, "layers": [16, 1], "optimizer": {"name": "sgd", "momentum": 0.9}, "note": None})
    expected = _expected_series(steps)
    for step, metrics in expected.items():
        instance.log_metrics(dict(metrics), step=step)
    instance.finalize("success")
    _compare(logger, "every logged step is stored with every value", expected, read_metrics(instance))


def check_survives_error(logger: Any, read_metrics: ReadMetrics, save_dir: os.PathLike, fail_at_step: int = 5) -> None:
    """The failure rule: a Trainer whose training raises leaves every earlier step stored, and ``finalize`` does
    not raise."""
    import fulmen
    from fulmen.testing.reference import reference_loader, reference_module

    instance = make_logger(logger, save_dir)
    recorded: Dict[int, Dict[str, float]] = {}
    original = instance.log_metrics

    def recording(metrics: Dict[str, float], step: Optional[int] = None) -> None:
        recorded.setdefault(int(step), {}).update(metrics)
        return original(metrics, step=step)

    instance.log_metrics = recording
    trainer = fulmen.Trainer(
        accelerator="cpu", logger=instance, max_epochs=1, log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(save_dir),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(reference_module(fail_at_step=fail_at_step), reference_loader(batch_size=4))
        except RuntimeError as exc:
            if "planned failure" not in str(exc):
                raise
        else:
            raise AssertionError("the reference module was meant to raise; the Trainer swallowed the error")
    finalize_failures = [str(w.message) for w in caught if "failed to finalize" in str(w.message)]
    if finalize_failures:
        raise fail("logger", logger, "finalize('failed') after an error in training does not raise", finalize_failures[0])
    if not recorded:
        raise fail("logger", logger, "the Trainer logs to it", "log_metrics was never called before the error")
    try:
        instance.save()
    except Exception as exc:
        raise fail("logger", logger, "save() after the error and finalize still works (a late flush)",
                   f"raised {type(exc).__name__}: {exc}") from None
    _compare(logger, "every step logged before an error is stored", recorded, read_metrics(instance))


def check_state_round_trip(logger: Any, save_dir: os.PathLike) -> None:
    """The resume rule: a fresh logger given ``state_dict()`` continues the same ``version``."""
    instance = make_logger(logger, save_dir)
    instance.log_metrics({"loss": 1.0}, step=0)
    instance.save()
    state = instance.state_dict()
    if not isinstance(state, dict):
        raise fail("logger", logger, "state_dict() returns a dict", f"got {type(state).__name__}")
    fresh = make_logger(logger, save_dir)
    fresh.load_state_dict(state)
    if instance.version is not None and fresh.version != instance.version:
        raise fail("logger", logger, "a fresh logger loaded with state_dict() continues the same version",
                   f"version {instance.version!r} became {fresh.version!r}")
    instance.finalize("success")


def check_logger(logger: Any, read_metrics: ReadMetrics, save_dir: os.PathLike) -> None:
    """Every logger rule, each in its own subdirectory of ``save_dir``."""
    save_dir = Path(save_dir)
    check_identity(logger, save_dir / "identity")
    check_records_every_step(logger, read_metrics, save_dir / "every_step")
    check_survives_error(logger, read_metrics, save_dir / "error")
    check_state_round_trip(logger, save_dir / "state")


def csv_metrics(logger: Any) -> Dict[int, Dict[str, float]]:
    """``read_metrics`` for fulmen's ``CSVLogger`` (and loggers that write its format):
    ``metrics.csv`` in ``log_dir``, rows of one step merged."""
    import csv

    stored: Dict[int, Dict[str, float]] = {}
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.pop("step")))
            stored.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return stored
