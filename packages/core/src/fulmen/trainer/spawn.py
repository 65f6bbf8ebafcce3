"""Running fit/validate/test/predict in ranks started by torch.multiprocessing.

Each rank builds its own Trainer from the original constructor arguments and runs the
stage; rank 0 sends back what the calling process needs to look as if it had trained
itself: the weights, the loop progress, the metrics and the checkpoint callbacks' paths.
"""

from __future__ import annotations

import copy
from typing import Any, Dict




def _worker(init_kwargs: Dict[str, Any], stage: str, model, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    from fulmen.trainer.trainer import Trainer

    # torch.multiprocessing hands tensors to children through shared memory: without a
    # private copy every rank would update the same parameters (racing, and twice per step).
    model = copy.deepcopy(model)
    trainer = Trainer(**init_kwargs)
    result = getattr(trainer, stage)(model, **kwargs)
    return {
        "result": result,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "progress": trainer._progress.state_dict(),
        "callback_metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()},
        "logged_metrics": dict(trainer.logged_metrics),
        "checkpoints": [cb.state_dict() for cb in trainer.checkpoint_callbacks],
    }


def run(trainer, stage: str, model, kwargs: Dict[str, Any]) -> Any:
    payload = trainer.strategy.launcher.launch(_worker, trainer._init_kwargs, stage, model, kwargs)
    if payload is None:
        return None
    model.load_state_dict(payload["state_dict"])
    model.trainer = trainer
    trainer.module = model
    trainer._progress.load_state_dict({**payload["progress"], "epoch_complete": False})
    trainer._metrics.callback_metrics.update(payload["callback_metrics"])
    trainer._metrics.logged_metrics.update(payload["logged_metrics"])
    for callback, state in zip(trainer.checkpoint_callbacks, payload["checkpoints"]):
        callback.dirpath = state.get("dirpath")
        callback.load_state_dict(state)
    trainer.state = "finished"
    return payload["result"]

