"""Accelerator conformance.

* the class answers ``is_available()``, ``device_count()`` and ``auto_priority`` without
  being instantiated (``accelerator="auto"`` asks every registered one, so these must be
  cheap and must not raise where the hardware is absent);
* where available: ``parse_devices`` turns ``1``/``"auto"`` into devices of its
  ``device_type`` and refuses ``0``, ``-2``, ``"many"``, ``[]`` and ``True`` with a
  ``FulmenConfigError``; ``setup_device`` and tensor math on the device work;
  ``unsupported_precision_reason`` accepts ``32-true``; ``teardown`` works;
* the reference problem trained on one device of it ends within tolerance of the CPU.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from fulmen.testing._common import describe, fail, registry, skip
from fulmen.testing.strategy import check_training, run_strategy


def accelerator_class(accelerator: Any) -> type:
    """The class behind a registered name, import path or class."""
    from fulmen.accelerators.base import Accelerator
    from fulmen.plugins.discovery import import_object

    if isinstance(accelerator, str):
        if ":" in accelerator:
            return accelerator_class(import_object(accelerator))
        factory = registry().get("accelerator", accelerator).factory
        cls = factory.resolve() if hasattr(factory, "resolve") else factory
    else:
        cls = accelerator
    if not (isinstance(cls, type) and issubclass(cls, Accelerator)):
        raise fail("accelerator", accelerator, "is registered as an Accelerator subclass (or a factory with resolve())",
                   f"got {cls!r}")
    return cls


def check_class_api(accelerator: Any) -> type:
    """The class-level rule (cheap ``is_available``/``device_count``, string ``name`` and ``device_type``); returns
    the class."""
    cls = accelerator_class(accelerator)
    if isinstance(accelerator, str) and ":" not in accelerator:
        factory = registry().get("accelerator", accelerator).factory
        for attr in ("is_available", "auto_priority"):
            if not hasattr(factory, attr):
                raise fail("accelerator", accelerator, "the registered factory exposes is_available and auto_priority",
                           f"{factory!r} has no {attr}; register the class itself (or a factory that forwards them)")
    for attr in ("name", "device_type"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise fail("accelerator", accelerator, f"the class sets a non-empty string {attr}", f"{attr}={getattr(cls, attr, None)!r}")
    if not isinstance(cls.auto_priority, int):
        raise fail("accelerator", accelerator, "auto_priority is an int", f"got {cls.auto_priority!r}")
    available = cls.is_available()
    if not isinstance(available, bool):
        raise fail("accelerator", accelerator, "is_available() returns a bool", f"got {available!r}")
    count = cls.device_count()
    if not isinstance(count, int) or count < 0:
        raise fail("accelerator", accelerator, "device_count() returns an int >= 0", f"got {count!r}")
    return cls


def check_devices(accelerator: Any) -> None:
    """The device rule (``parse_devices`` good and bad values, device math, ``32-true`` accepted); skipped where
    unavailable."""
    from fulmen.errors import FulmenConfigError

    cls = check_class_api(accelerator)
    if not cls.is_available():
        skip(f"accelerator {describe(accelerator)} is not available on this machine")
    for devices in (1, "auto", "1"):
        parsed = cls.parse_devices(devices)
        if not parsed or not all(isinstance(d, torch.device) and d.type == cls.device_type for d in parsed):
            raise fail("accelerator", accelerator, f"parse_devices({devices!r}) gives devices of type {cls.device_type!r}",
                       f"got {parsed!r}")
    if len(cls.parse_devices(1)) != 1:
        raise fail("accelerator", accelerator, "parse_devices(1) gives one device", f"got {cls.parse_devices(1)!r}")
    for bad in (0, -2, "many", [], True):
        try:
            cls.parse_devices(bad)
        except FulmenConfigError:
            continue
        except Exception as exc:
            raise fail("accelerator", accelerator, f"parse_devices({bad!r}) raises FulmenConfigError",
                       f"raised {type(exc).__name__}: {exc}") from None
        raise fail("accelerator", accelerator, f"parse_devices({bad!r}) raises FulmenConfigError", "it returned normally")
    device = cls.parse_devices(1)[0]
    instance = cls()
    instance.setup_device(device)
    value = (torch.ones(4, device=device) * 2).sum().item()
    if value != 8.0:
        raise fail("accelerator", accelerator, "tensor math on its device works", f"2 * ones(4) summed to {value}")
    from fulmen.precision.base import Precision

    reason = instance.unsupported_precision_reason(Precision())
    if reason is not None:
        raise fail("accelerator", accelerator, "unsupported_precision_reason accepts 32-true", f"it said {reason!r}")
    instance.teardown()


def check_training_on_device(
    accelerator: str, atol: float = 1e-4, rtol: float = 1e-3, workdir: Optional[os.PathLike] = None
) -> None:
    """The training rule: the reference problem on one device of the accelerator ends close to plain PyTorch."""
    cls = accelerator_class(accelerator)
    if not cls.is_available():
        skip(f"accelerator {describe(accelerator)} is not available on this machine")
    report = run_strategy("single_device", 1, accelerator, None, workdir)
    report.spec = accelerator
    check_training(report, atol, rtol)


def check_accelerator(accelerator: Any, atol: float = 1e-4, rtol: float = 1e-3, workdir: Optional[os.PathLike] = None) -> None:
    """Every accelerator rule; skipped after the class checks where it is not available."""
    check_class_api(accelerator)
    check_devices(accelerator)
    if isinstance(accelerator, str) and ":" not in accelerator:
        check_training_on_device(accelerator, atol, rtol, workdir)
