"""From a fulmen checkpoint back to the ecosystem's format.

A fine-tuned model is used elsewhere through ``from_pretrained``, so the last step of a
fine-tune is a directory that ``transformers.AutoModelForCausalLM.from_pretrained`` (or
peft's ``PeftModel.from_pretrained`` for adapters) opens. :func:`export_pretrained` reads
the weights of any fulmen checkpoint — one file, or a sharded FSDP directory, consolidated
on one process with ``fulmen_fsdp``'s own consolidation — puts them into a model object
of the right architecture and lets that object's ``save_pretrained`` write the directory,
so the config and file layout are the library's own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

from fulmen.errors import FulmenCheckpointError, FulmenConfigError

PathLike = Union[str, os.PathLike]


def _read_file(path: Path) -> Dict[str, Any]:
    """Through fulmen's own reader: ``weights_only`` and the footer's checksum, so a corrupted
    or truncated file is refused with FulmenCheckpointError instead of exported."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    return TorchCheckpointIO().load_checkpoint(path, map_location="cpu")


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """A whole fulmen checkpoint as one dict on the CPU: a file as it is; a sharded
    directory consolidated first (needs ``fulmen-strategy-fsdp``)."""
    path = Path(path)
    if not path.exists():
        raise FulmenCheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        try:
            from fulmen_fsdp import consolidate_checkpoint
        except ImportError as exc:
            raise FulmenCheckpointError(
                f"{path} is a sharded checkpoint directory; consolidating it needs fulmen-strategy-fsdp "
                "(pip install fulmen-strategy-fsdp)"
            ) from exc
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "consolidated.ckpt"
            consolidate_checkpoint(path, out)
            return _read_file(out)
    return _read_file(path)


def checkpoint_weights(path: PathLike, prefix: str = "") -> Dict[str, torch.Tensor]:
    """The model weights of a fulmen checkpoint, with ``prefix`` (the attribute path of the
    model inside the fulmen ``Module``, for example ``"model."``) removed from the names
    and entries outside it dropped."""
    return _weights_of(read_checkpoint(path), prefix, path)


def _weights_of(checkpoint: Dict[str, Any], prefix: str, path: PathLike) -> Dict[str, torch.Tensor]:
    """:func:`checkpoint_weights` of a checkpoint already read (``path`` names it in errors)."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise FulmenCheckpointError(f"{path} is not a fulmen checkpoint (no 'state_dict' entry)")
    if not prefix:
        return dict(state)
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        heads = sorted({k.split(".", 1)[0] + "." for k in state})
        raise FulmenCheckpointError(
            f"no weight in {path} starts with prefix={prefix!r}; the top-level names there start with "
            f"{', '.join(heads[:8])}"
        )
    return out


def export_pretrained(
    checkpoint: PathLike,
    model: nn.Module,
    directory: PathLike,
    *,
    prefix: str = "",
    merge_adapters: bool = False,
    **save_kwargs: Any,
) -> Path:
    """Load the weights of ``checkpoint`` into ``model`` and write ``directory`` with the
    model's own ``save_pretrained``.

    ``model``: an object of the trained architecture, usually built exactly as in the run
    (a ``transformers`` model from the same config; for LoRA the same ``PeftModel``). A
    checkpoint written with ``TrainableCheckpoint`` holds only the trainable tensors; they
    go into ``model`` on top of its own (pretrained) base, after its fingerprint is checked.
    ``merge_adapters=True`` folds LoRA weights into the base (peft's ``merge_and_unload``)
    so the directory is a plain model that ``AutoModelForCausalLM.from_pretrained`` opens;
    otherwise a ``PeftModel`` writes its adapters for ``PeftModel.from_pretrained``.
    """
    save = getattr(model, "save_pretrained", None)
    if not callable(save):
        raise FulmenConfigError(
            f"{type(model).__name__} has no save_pretrained(); pass the pretrained model object itself "
            "(the one with save_pretrained), not the fulmen Module that holds it (and set prefix= to its attribute, e.g. 'model.')"
        )
    full = read_checkpoint(checkpoint)
    weights = _weights_of(full, prefix, checkpoint)  # the file is read once
    fingerprint = full.get("frozen_base")
    if fingerprint is not None:
        _check_base(model, fingerprint, prefix)
    result = model.load_state_dict(weights, strict=fingerprint is None)
    if fingerprint is not None and result.unexpected_keys:
        raise FulmenCheckpointError(
            f"the checkpoint's trainable tensors {result.unexpected_keys[:5]} are not in {type(model).__name__}; "
            "build the model with the same adapters as the run"
        )
    if merge_adapters:
        merge = getattr(model, "merge_and_unload", None)
        if not callable(merge):
            raise FulmenConfigError(f"merge_adapters=True needs a model with adapters (merge_and_unload()); {type(model).__name__} has none")
        model = merge()
    directory = Path(directory)
    model.save_pretrained(str(directory), **save_kwargs)
    return directory


def _check_base(model: nn.Module, saved: Dict[str, Any], prefix: str) -> None:
    from fulmen.finetune.trainable_checkpoint import base_fingerprint, compare_fingerprints

    live = base_fingerprint(model)
    if prefix:  # the fingerprint was taken on the fulmen Module: names carry the prefix
        saved = {"tensors": {k[len(prefix):]: v for k, v in saved["tensors"].items() if k.startswith(prefix)}}
        saved["hash"] = _rehash(saved["tensors"])
        live["hash"] = _rehash(live["tensors"])
    differences = compare_fingerprints(saved, live)
    if differences:
        raise FulmenCheckpointError(
            "the checkpoint holds trainable parameters for a different frozen base than the model given to "
            f"export ({'; '.join(differences)}); build the model from the pretrained weights the run used"
        )


def _rehash(tensors: Dict[str, Any]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, (_, _, value) in tensors.items():
        digest.update(f"{name}:{value};".encode())
    return digest.hexdigest()
