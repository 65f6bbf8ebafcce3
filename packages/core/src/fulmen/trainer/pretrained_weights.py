"""The hand-off between ``fulmen.finetune.load_pretrained`` and the Trainer.

A model built on the meta device in ``configure_model`` has nowhere to put its pretrained
weights until the strategy has given each rank its shards; ``load_pretrained`` then only
marks the module, and the Trainer calls :func:`load_pending_weights` right after setup and
before any checkpoint is restored (so a resume wins over the pretrained weights). Kept out
of ``trainer.py`` so that the finetune package is imported only when a run uses it.
"""

from __future__ import annotations

from typing import Any


def load_pending_weights(module: Any) -> None:
    """Read the weights ``load_pretrained`` deferred on ``module``'s submodules, if any."""
    from fulmen.finetune.meta_init import has_pending, load_pending

    if has_pending(module):
        load_pending(module)
