"""Understanding every shape ``configure_optimizers`` may return (Lightning's contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import torch

from fulmen.errors import FulmenUserCodeError

_SHAPES = (
    "an optimizer; a list/tuple of optimizers; a tuple (optimizers, schedulers); "
    "or a dict {'optimizer': opt, 'lr_scheduler': scheduler or {'scheduler': s, "
    "'interval': 'epoch'|'step', 'frequency': n, 'monitor': 'metric'}} (or a list of such dicts)"
)


@dataclass
class SchedulerConfig:
    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: Optional[str] = None
    strict: bool = True
    name: Optional[str] = None
    opt_idx: int = 0

    @property
    def needs_metric(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _bad(what: str) -> FulmenUserCodeError:
    return FulmenUserCodeError(f"configure_optimizers returned {what}; it must return {_SHAPES}")


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer) or (
        hasattr(obj, "step") and hasattr(obj, "zero_grad") and hasattr(obj, "param_groups")
    )


def _scheduler_config(obj: Any, default_monitor: Optional[str] = None) -> SchedulerConfig:
    if isinstance(obj, dict):
        if "scheduler" not in obj:
            raise _bad(f"an lr_scheduler dict without a 'scheduler' key ({sorted(obj)})")
        unknown = set(obj) - {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
        if unknown:
            raise _bad(f"an lr_scheduler dict with unknown keys {sorted(unknown)}")
        interval = obj.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            raise _bad(f"lr_scheduler interval={interval!r} (use 'epoch' or 'step')")
        frequency = obj.get("frequency", 1)
        if not isinstance(frequency, int) or frequency < 1:
            raise _bad(f"lr_scheduler frequency={frequency!r} (use a positive integer)")
        config = SchedulerConfig(
            obj["scheduler"], interval, frequency, obj.get("monitor", default_monitor),
            obj.get("strict", True), obj.get("name"),
        )
    else:
        config = SchedulerConfig(obj, monitor=default_monitor)
    if not hasattr(config.scheduler, "step"):
        raise _bad(f"a scheduler of type {type(config.scheduler).__name__} that has no step()")
    if config.needs_metric and not config.monitor:
        raise FulmenUserCodeError(
            "configure_optimizers returned ReduceLROnPlateau without a metric to watch; return "
            "{'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'monitor': 'val_loss'}}"
        )
    return config


def parse_optimizers(result: Any) -> Tuple[List[Any], List[SchedulerConfig]]:
    if result is None:
        return [], []
    if _is_optimizer(result):
        return [result], []
    if isinstance(result, dict):
        return _from_dicts([result])
    if isinstance(result, (list, tuple)):
        items = list(result)
        if not items:
            raise _bad("an empty list")
        if all(isinstance(item, dict) for item in items):
            return _from_dicts(items)
        if len(items) == 2 and isinstance(items[0], (list, tuple)) and isinstance(items[1], (list, tuple)):
            optimizers = list(items[0])
            if not all(_is_optimizer(o) for o in optimizers):
                raise _bad("(optimizers, schedulers) whose first list holds non-optimizers")
            schedulers = [_scheduler_config(s) for s in items[1]]
            _assign_optimizer_indices(optimizers, schedulers)
            return optimizers, schedulers
        if all(_is_optimizer(item) for item in items):
            return items, []
        kinds = ", ".join(type(item).__name__ for item in items)
        raise _bad(f"a sequence of ({kinds})")
    raise _bad(f"a {type(result).__name__}")


def _from_dicts(dicts: Sequence[dict]) -> Tuple[List[Any], List[SchedulerConfig]]:
    optimizers, schedulers = [], []
    for d in dicts:
        unknown = set(d) - {"optimizer", "lr_scheduler", "monitor"}
        if "optimizer" not in d or unknown:
            raise _bad(f"a dict with keys {sorted(d)}")
        if not _is_optimizer(d["optimizer"]):
            raise _bad(f"a dict whose 'optimizer' is a {type(d['optimizer']).__name__}")
        optimizers.append(d["optimizer"])
        if d.get("lr_scheduler") is not None:
            schedulers.append(_scheduler_config(d["lr_scheduler"], d.get("monitor")))
    _assign_optimizer_indices(optimizers, schedulers)
    return optimizers, schedulers


def _assign_optimizer_indices(optimizers: List[Any], schedulers: List[SchedulerConfig]) -> None:
    for config in schedulers:
        inner = getattr(config.scheduler, "optimizer", None)
        for index, opt in enumerate(optimizers):
            if opt is inner:
                config.opt_idx = index
                break
        else:
            raise FulmenUserCodeError(
                f"the scheduler {type(config.scheduler).__name__} steps an optimizer that "
                "configure_optimizers did not return; build it on one of the returned optimizers"
            )
