"""Fine-tuning pretrained models: pretrained weights loaded shard by shard into meta-built
models, layer-class policies for sharding and activation checkpointing, checkpoints of the
trainable parameters only, export back to a ``from_pretrained`` directory, and parameter
groups for layer-wise learning-rate decay.

Everything here is generic PyTorch; code that needs ``transformers`` or ``peft`` lives in
``fulmen.finetune.hf`` and imports them there. Names load on first access, so ``import
fulmen`` pays nothing for this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_pretrained": "fulmen.finetune.meta_init",
    "LoadReport": "fulmen.finetune.meta_init",
    "no_split_modules": "fulmen.finetune.policies",
    "checkpoint_layers": "fulmen.finetune.policies",
    "resolve_policy": "fulmen.finetune.policies",
    "TrainableCheckpoint": "fulmen.finetune.trainable_checkpoint",
    "base_fingerprint": "fulmen.finetune.trainable_checkpoint",
    "trainable_state_dict": "fulmen.finetune.trainable_checkpoint",
    "checkpoint_weights": "fulmen.finetune.export",
    "export_pretrained": "fulmen.finetune.export",
    "layer_decay_param_groups": "fulmen.finetune.param_groups",
    "unfreeze_with_layer_decay": "fulmen.finetune.param_groups",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen.finetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
