"""torchmetrics ``Metric`` objects handed to ``self.log``, and their states in checkpoints.

torchmetrics stays optional: a value can only be a ``Metric`` if the user's code imported
torchmetrics already, so detection looks in ``sys.modules`` and never imports it. A run that
logs no Metric pays nothing for this module.

Why the states go into checkpoints: torchmetrics registers its states with
``persistent=False``, so they are not part of the module's ``state_dict`` and a resume from
a mid-epoch checkpoint would compute the epoch value over the batches after the resume
only (Lightning's behaviour). Each rank saves its own, local state (what ``update`` built;
``compute`` syncs across ranks and then puts the local state back), so every rank gets back
exactly what it had. States are found by the metric's attribute path in the module, which
is the same in the run that saved and the run that resumes.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, Optional

import torch

from fulmen.errors import FulmenUserCodeError, FulmenWarning


def is_metric(value: Any) -> bool:
    """True for a torchmetrics ``Metric`` (of any subclass); never imports torchmetrics."""
    torchmetrics = sys.modules.get("torchmetrics")
    return torchmetrics is not None and isinstance(value, torchmetrics.Metric)


def check_loggable(name: str, value: Any) -> None:
    """A ``MetricCollection`` is many values under one name: point to ``log_dict``."""
    torchmetrics = sys.modules.get("torchmetrics")
    if torchmetrics is not None and isinstance(value, torchmetrics.MetricCollection):
        raise FulmenUserCodeError(
            f"self.log({name!r}) got a MetricCollection; log its members with "
            "self.log_dict(collection), which logs each metric under the collection's names"
        )


def step_value(metric: Any) -> Optional[torch.Tensor]:
    """The value of the last ``metric(preds, target)`` call (Lightning's on_step value);
    ``None`` when the step only called ``update``, which computes no batch value."""
    value = getattr(metric, "_forward_cache", None)
    return value if isinstance(value, torch.Tensor) else None


def find_metrics(module: torch.nn.Module) -> Dict[str, Any]:
    """Every Metric inside ``module`` by attribute path (``""`` when it is one itself)."""
    if "torchmetrics" not in sys.modules:
        return {}
    return {path: child for path, child in module.named_modules() if is_metric(child)}


def capture_states(module: torch.nn.Module, strategy: Any) -> Optional[Dict[str, Any]]:
    """Every rank's Metric states, in rank order, or ``None`` when the module holds no
    Metric. A collective when it holds some: the module's structure is the same on every
    rank, so all ranks take the same branch."""
    metrics = find_metrics(module)
    if not metrics:
        return None
    own = {path: {"state": _copy_to_cpu(m.metric_state), "update_count": int(m.update_count)} for path, m in metrics.items()}
    per_rank = strategy.all_gather_object(own) if strategy.world_size > 1 else [own]
    return {"per_rank": per_rank}


def restore_states(module: torch.nn.Module, saved: Dict[str, Any], rank: int) -> None:
    """Put this rank's saved states back into the module's Metrics (before any update)."""
    per_rank = saved.get("per_rank") or []
    if not per_rank:
        return
    if rank >= len(per_rank):
        warnings.warn(
            f"the checkpoint holds torchmetrics states for {len(per_rank)} ranks and this is rank "
            f"{rank}; this rank's metrics start empty, so their epoch values miss the batches "
            "before the resume",
            FulmenWarning,
            stacklevel=3,
        )
        return
    metrics = find_metrics(module)
    for path, entry in per_rank[rank].items():
        metric = metrics.get(path)
        if metric is None:
            warnings.warn(
                f"the checkpoint holds the state of a torchmetrics Metric at {path or '<module>'!r}, "
                "which this module does not have; that state is not restored",
                FulmenWarning,
                stacklevel=3,
            )
            continue
        metric.reset()
        device = metric.device
        # Metric._load_from_state_dict loads the states it finds whatever their persistence
        # flag, so the user's choice of what the module's state_dict holds stays theirs.
        metric.load_state_dict({k: _to(v, device) for k, v in entry["state"].items()}, strict=False)
        # No public setter: the count makes update_called true again and keeps compute()
        # from warning that it ran before update().
        if hasattr(metric, "_update_count"):
            metric._update_count = int(entry.get("update_count", 0))


def path_of(module: torch.nn.Module, metric: Any, found: Dict[str, Any]) -> Optional[str]:
    """``metric``'s attribute path in ``module`` (``found`` from :func:`find_metrics`)."""
    for path, candidate in found.items():
        if candidate is metric:
            return path
    return None


def warn_not_in_module(name: str) -> None:
    warnings.warn(
        f"self.log({name!r}) got a torchmetrics Metric that is not an attribute of the module, "
        "so its state is not in the checkpoint and a resume mid-epoch computes it over the "
        "batches after the resume only; assign it in __init__ (self.metric = ...)",
        FulmenWarning,
        stacklevel=4,
    )


def _copy_to_cpu(state: Dict[str, Any]) -> Dict[str, Any]:
    # Copies: metrics update their tensors in place, and an asynchronous save may still be
    # writing this checkpoint when the next batch updates them.
    def copy(value):
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    return {key: copy(value) for key, value in state.items()}


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value
