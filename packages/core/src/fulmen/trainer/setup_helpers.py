"""Turning the Trainer's user-facing arguments into objects (loggers, callbacks, intervals)."""

from __future__ import annotations

from typing import Any, List, Optional, Union

from fulmen.errors import FulmenConfigError


def _as_list(value: Any) -> List[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def build_loggers(logger: Any, registry, root_dir: str) -> List[Any]:
    """``None``/``True`` → the CSV logger; ``False`` → none; names, objects or a list of them."""
    if logger is None or logger is True:
        return [registry.create("logger", "csv", save_dir=root_dir)]
    if logger is False:
        return []
    out = []
    for item in _as_list(logger):
        if isinstance(item, str):
            entry = registry.get("logger", item)
            out.append(_create_logger(entry, root_dir))
        elif item is True or item is None or item is False:
            raise FulmenConfigError("logger= lists may hold logger names or objects, not booleans")
        else:
            out.append(item)
    return out


def _create_logger(entry, root_dir: str):
    try:
        return entry.factory(save_dir=root_dir)
    except TypeError:
        # A logger that talks to a server may have no local directory; its settings then
        # come from its own environment variables.
        return entry.factory()


def build_callbacks(trainer, callbacks, enable_checkpointing, enable_progress_bar, enable_model_summary, max_time) -> List[Any]:
    from fulmen.callbacks.model_checkpoint import ModelCheckpoint
    from fulmen.callbacks.model_summary import ModelSummary
    from fulmen.callbacks.progress_bar import ProgressBar
    from fulmen.callbacks.timer import Timer

    registry = trainer.fabric.registry
    resolved = [registry.create("callback", c) if isinstance(c, str) else c for c in _as_list(callbacks)]
    kinds = lambda cls: any(isinstance(c, cls) for c in resolved)  # noqa: E731
    if enable_checkpointing is False and kinds(ModelCheckpoint):
        raise FulmenConfigError(
            "enable_checkpointing=False but callbacks= contains a ModelCheckpoint; remove one of them"
        )
    if enable_progress_bar is False and kinds(ProgressBar):
        raise FulmenConfigError("enable_progress_bar=False but callbacks= contains a ProgressBar; remove one of them")
    if enable_checkpointing is not False and not kinds(ModelCheckpoint):
        resolved.append(ModelCheckpoint())
    if enable_progress_bar is not False and not kinds(ProgressBar):
        resolved.append(ProgressBar())
    if enable_model_summary is not False and not kinds(ModelSummary):
        resolved.append(ModelSummary())
    if max_time is not None:
        if kinds(Timer):
            raise FulmenConfigError("max_time= and a Timer callback both set a time limit; keep one")
        resolved.append(Timer(duration=max_time))
    # Checkpoints are written last, after every other callback updated its state.
    return [c for c in resolved if not isinstance(c, ModelCheckpoint)] + [c for c in resolved if isinstance(c, ModelCheckpoint)]


def parse_fast_dev_run(value: Union[int, bool]) -> int:
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise FulmenConfigError(f"fast_dev_run={value!r} must be a bool or a non-negative batch count")


def parse_val_check_interval(value: Union[int, float, None], every_n_epoch: Optional[int]) -> Union[int, float]:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        raise FulmenConfigError("val_check_interval must be a fraction of an epoch (float) or a batch count (int)")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise FulmenConfigError(f"val_check_interval={value} as a fraction must be in (0, 1]; use an int for a batch count")
        if every_n_epoch is None:
            raise FulmenConfigError("check_val_every_n_epoch=None needs val_check_interval as a batch count (int)")
        return value
    if isinstance(value, int) and value > 0:
        return value
    raise FulmenConfigError(f"val_check_interval={value!r} must be a positive int or a float in (0, 1]")
