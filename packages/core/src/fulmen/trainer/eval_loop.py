"""Validation, test, predict and the sanity check: one loop, parameterised by stage."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List


from fulmen.utilities.apply import first_batch_size

# stage → (step method, hook prefix)
STAGES = {
    "validate": ("validation_step", "validation"),
    "sanity": ("validation_step", "validation"),
    "test": ("test_step", "test"),
    "predict": ("predict_step", "predict"),
}


def takes_dataloader_idx(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return "dataloader_idx" in params or any(p.kind == p.VAR_POSITIONAL for p in params.values()) or len(params) >= 3


def run_evaluation(trainer, stage: str, loaders: List[Any], limits: List[float]) -> Any:
    """Run ``stage`` over ``loaders``; returns per-dataloader metric dicts (or predictions)."""
    step_name, prefix = STAGES[stage]
    module = trainer.module
    step = getattr(module, step_name)
    dispatch = trainer._step if getattr(trainer, "_dispatcher", None) is not None else None
    pass_idx = len(loaders) > 1 and takes_dataloader_idx(step)
    metrics = trainer._metrics
    profiling = getattr(trainer, "_profiling", None)
    if profiling is not None:  # decided once per evaluation: no profiler, no cost per batch
        loaders = profiling.eval_loaders(stage, loaders)
    was_training = module.training
    module.eval()
    metrics.stage = stage
    metrics.reset_stage(stage)
    metrics.multiple_dataloaders = len(loaders) > 1
    predictions: List[List[Any]] = []
    trainer._evaluating = True
    try:
        # The strategy decides between inference_mode and no_grad (some backends' collectives
        # or graphs refuse inference tensors).
        with trainer.strategy.evaluation_context(trainer.inference_mode):
            trainer._call(f"on_{prefix}_start")
            trainer._call(f"on_{prefix}_epoch_start")
            for dataloader_idx, (loader, limit) in enumerate(zip(loaders, limits)):
                metrics.dataloader_idx = dataloader_idx
                outputs: List[Any] = []
                predictions.append(outputs)
                batch_idx = 0
                for batch in loader:
                    if batch_idx >= limit:
                        break
                    metrics.phase = f"{prefix}_step"
                    metrics.start_batch(first_batch_size(batch))
                    trainer._call(f"on_{prefix}_batch_start", batch=batch, batch_idx=batch_idx, dataloader_idx=dataloader_idx)
                    args = (batch, batch_idx, dataloader_idx) if pass_idx else (batch, batch_idx)
                    with trainer.strategy.forward_context():
                        if dispatch is not None:
                            # Through the module the strategy wrapped, as training_step: a sharded
                            # (FSDP) module gathers its parameters in that module's forward.
                            output = dispatch(step_name, *args)
                        else:
                            output = step(*args)
                    if stage == "predict":
                        outputs.append(output)
                    trainer._call(
                        f"on_{prefix}_batch_end", outputs=output, batch=batch, batch_idx=batch_idx,
                        dataloader_idx=dataloader_idx,
                    )
                    batch_idx += 1
            metrics.dataloader_idx = None
            metrics.phase = f"{prefix}_epoch_end"
            if stage != "predict":
                metrics.reduce_epoch(stage)  # so callbacks see epoch aggregates in the hook, as in Lightning
            trainer._call(f"on_{prefix}_epoch_end")
            logged = metrics.reduce_epoch(stage) if stage != "predict" else {}
            if stage in ("validate", "test"):
                trainer._log_to_loggers(logged)
            trainer._call(f"on_{prefix}_end")
            metrics.finish_epoch(stage)  # torchmetrics Metrics start the next run empty
    finally:
        trainer._evaluating = False
        metrics.multiple_dataloaders = False
        metrics.dataloader_idx = None
        metrics.stage, metrics.phase = "train", "train_step"
        if was_training:
            module.train()
    if stage == "predict":
        return predictions[0] if len(predictions) == 1 else predictions
    return split_by_dataloader(logged, len(loaders))


def split_by_dataloader(logged: Dict[str, float], count: int) -> List[Dict[str, float]]:
    """Lightning's return shape: one dict per dataloader, shared metrics in each."""
    if count <= 1:
        return [dict(logged)]
    out: List[Dict[str, float]] = [{} for _ in range(count)]
    for key, value in logged.items():
        marker = "/dataloader_idx_"
        if marker in key:
            index = int(key.rsplit(marker, 1)[1])
            out[index][key] = value
        else:
            for entry in out:
                entry[key] = value
    return out
