"""Precision conformance: the hook bundle behaves, training stays close to float32, and
the precision's own state survives a round trip.

* ``convert_module`` returns a module; ``forward_context`` and ``module_init_context`` are
  context managers that leave the default dtype as they found it;
* ``convert_input`` keeps the structure of a batch and never changes integer tensors
  (labels, indices) or non-tensors;
* trained through ``Fabric(strategy="single_device", precision=...)`` on the reference
  problem, the loss is finite and falls, and the parameters end within ``atol``/``rtol``
  of float32 training (pass a tolerance that fits the format: bf16 needs about 5e-2);
* ``fabric.save``/``fabric.load`` round trips are exact under this precision;
* ``state_dict()`` is a dict that a fresh instance accepts with ``load_state_dict`` and
  then returns unchanged.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import torch
from torch import nn

from fulmen.testing import reference
from fulmen.testing._common import describe, factory_of, fail, first_difference, plain, skip
from fulmen.testing.strategy import check_state_round_trip, check_training, run_strategy


def make_precision(precision: Any) -> Any:
    """A fresh precision object from a registered name, ``"module:attr"``, a class or a factory."""
    from fulmen.precision.base import Precision

    return factory_of("precision", precision, Precision)()


def unsupported_reason(precision: Any, accelerator: str) -> Optional[str]:
    """Why ``precision`` cannot run on ``accelerator`` here (absent hardware, refused format), or ``None``."""
    from fulmen.testing._common import registry

    reg = registry()
    accelerator_obj = reg.create("accelerator", accelerator)
    if not type(accelerator_obj).is_available():
        return f"accelerator {accelerator!r} is not available on this machine"
    return accelerator_obj.unsupported_precision_reason(make_precision(precision))


def check_hooks(precision: Any) -> None:
    """The hook rule: context managers restore the default dtype, ``convert_module``/``convert_input`` behave."""
    p = make_precision(precision)
    if not isinstance(getattr(p, "name", None), str) or not p.name:
        raise fail("precision", precision, "has a non-empty string name", f"name is {getattr(p, 'name', None)!r}")
    p.setup(torch.device("cpu"))
    before = torch.get_default_dtype()
    for attr in ("module_init_context", "forward_context"):
        context = getattr(p, attr)()
        if not hasattr(context, "__enter__") or not hasattr(context, "__exit__"):
            raise fail("precision", precision, f"{attr}() returns a context manager", f"got {context!r}")
        with context:
            pass
        if torch.get_default_dtype() != before:
            raise fail("precision", precision, f"{attr}() restores the default dtype on exit",
                       f"default dtype was {before}, is {torch.get_default_dtype()} afterwards")
    module = p.convert_module(nn.Linear(2, 2))
    if not isinstance(module, nn.Module):
        raise fail("precision", precision, "convert_module returns an nn.Module", f"got {type(module).__name__}")
    batch = {"x": torch.randn(3, 2), "labels": torch.tensor([0, 1, 2]), "mask": torch.tensor([True, False, True]),
             "name": "batch", "size": 3, "pair": (torch.zeros(1), "b")}
    converted = p.convert_input(batch)
    if not isinstance(converted, dict) or set(converted) != set(batch):
        raise fail("precision", precision, "convert_input keeps the batch's structure", f"got {converted!r}")
    for key in ("labels", "mask"):
        if not torch.equal(converted[key], batch[key]) or converted[key].dtype != batch[key].dtype:
            raise fail("precision", precision, "convert_input leaves integer and bool tensors alone",
                       f"{key}: {batch[key]!r} became {converted[key]!r}")
    if converted["name"] != "batch" or converted["size"] != 3 or converted["pair"][1] != "b":
        raise fail("precision", precision, "convert_input leaves non-tensors alone", f"got {converted!r}")


def check_training_and_state(
    precision: Any, accelerator: str = "cpu", atol: float = 1e-5, rtol: float = 1e-4, workdir: Optional[os.PathLike] = None
) -> None:
    """The training rule: finite, falling loss, parameters near float32's, exact save/load under this precision."""
    spec = precision if isinstance(precision, str) and ":" not in precision else make_precision(precision)
    report = run_strategy("single_device", 1, accelerator, spec, workdir)
    report.spec = precision
    losses = report.ranks[0]["losses"]
    if not all(math.isfinite(x) for x in losses):
        raise fail("precision", precision, "training gives finite losses", f"losses: {losses}")
    steps = len(losses) // reference.EPOCHS
    if not sum(losses[-steps:]) < sum(losses[:steps]):
        raise fail("precision", precision, "the loss falls on the reference problem",
                   f"first epoch {losses[:steps]}, last epoch {losses[-steps:]}")
    _rename(lambda: check_training(report, atol, rtol), "precision", precision)
    _rename(lambda: check_state_round_trip(report), "precision", precision)


def _rename(check, kind: str, spec: Any) -> None:
    try:
        check()
    except AssertionError as exc:
        raise AssertionError(str(exc).replace("strategy 'single_device'", f"{kind} {describe(spec)} (single_device)")) from None


def check_state_dict(precision: Any, accelerator: str = "cpu") -> None:
    """The state rule: ``state_dict()`` loaded into a fresh instance comes back unchanged."""
    from fulmen.testing.accelerator import accelerator_class

    device = accelerator_class(accelerator).parse_devices(1)[0]
    p = make_precision(precision)
    p.setup(device)
    state = p.state_dict()
    if not isinstance(state, dict):
        raise fail("precision", precision, "state_dict() returns a dict", f"got {type(state).__name__}")
    fresh = make_precision(precision)
    fresh.setup(device)
    fresh.load_state_dict(state)
    diff = first_difference(plain(state), plain(fresh.state_dict()))
    if diff:
        raise fail("precision", precision, "load_state_dict(state_dict()) into a fresh instance round trips", diff)


def check_precision(
    precision: Any, accelerator: str = "cpu", atol: float = 1e-5, rtol: float = 1e-4,
    workdir: Optional[os.PathLike] = None,
) -> None:
    """Every precision rule; skipped where the accelerator cannot run this precision."""
    reason = unsupported_reason(precision, accelerator)
    if reason:
        skip(f"precision {describe(precision)} on {accelerator}: {reason}")
    check_hooks(precision)
    check_state_dict(precision, accelerator)
    check_training_and_state(precision, accelerator, atol, rtol, workdir)
