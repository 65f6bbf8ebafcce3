"""Running fit/validate/test/predict in ranks started by torch.multiprocessing.

Each rank builds its own Trainer (of the caller's class, see ``fulmen.fabric.respawn``)
and runs the stage; rank 0 sends back what the calling process needs to look as if it had
trained itself: the weights, the loop progress, the metrics and the checkpoint callbacks'
paths.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

from fulmen.fabric.respawn import launch_rebuilt


def _stage_in_worker(trainer, stage: str, model, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    # torch.multiprocessing hands tensors to children through shared memory: without a
    # private copy every rank would update the same parameters (racing, and twice per step).
    model = copy.deepcopy(model)
    result = getattr(trainer, stage)(model, **kwargs)
    return {
        "result": result,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "progress": trainer.fit_progress.state_dict(),
        "callback_metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()},
        "logged_metrics": dict(trainer.logged_metrics),
        "checkpoints": [cb.state_dict() for cb in trainer.checkpoint_callbacks],
    }


def run(trainer, stage: str, model, kwargs: Dict[str, Any]) -> Any:
    """Run ``trainer.<stage>(model, **kwargs)`` in the workers; mirror rank 0's outcome here."""
    payload = launch_rebuilt(trainer, _stage_in_worker, stage, model, kwargs)
    if payload is None:
        return None
    model.load_state_dict(payload["state_dict"])
    model.trainer = trainer
    trainer.module = model
    trainer.fit_progress.load_state_dict({**payload["progress"], "epoch_complete": False})
    trainer.callback_metrics.update(payload["callback_metrics"])
    trainer.logged_metrics.update(payload["logged_metrics"])
    for callback, state in zip(trainer.checkpoint_callbacks, payload["checkpoints"]):
        callback.dirpath = state.get("dirpath")
        callback.load_state_dict(state)
    trainer.state = "finished"
    return payload["result"]
