"""The few steps of a fine-tune that need ``transformers`` or ``peft``, imported here only.

``import fulmen`` and ``import fulmen.finetune`` never import this module; it fails with
the ``pip install`` line when the libraries are missing.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Union

from torch import nn


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"fulmen.finetune.hf needs {name}: pip install transformers peft safetensors") from exc


def causal_lm_from_config(source: Union[str, os.PathLike], **config_overrides: Any) -> nn.Module:
    """A causal language model with the architecture saved at ``source`` (a
    ``save_pretrained`` directory) and *no* weights read: built on whatever device is
    current, so inside ``configure_model`` under a sharding strategy it costs no memory.
    Follow it with :func:`fulmen.finetune.load_pretrained` to fill it shard by shard."""
    transformers = _require("transformers")
    config = transformers.AutoConfig.from_pretrained(str(source), **config_overrides)
    return transformers.AutoModelForCausalLM.from_config(config)


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Optional[Iterable[str]] = None,
    **lora_options: Any,
) -> nn.Module:
    """``model`` with LoRA adapters (peft's ``get_peft_model``): only the adapters train.
    ``target_modules=None`` lets peft pick the attention projections it knows for the
    architecture."""
    peft = _require("peft")
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules is not None else None,
        task_type="CAUSAL_LM",
        **lora_options,
    )
    return peft.get_peft_model(model, config)
