"""Checkpoints that keep only what training changes.

With LoRA (or any fine-tune that freezes most of a model) the frozen base is already on
disk as the pretrained weights; writing it into every checkpoint makes each file the size
of the model for a few megabytes of adapters. ``TrainableCheckpoint`` cuts the checkpoint's
``state_dict`` down to the parameters that require gradients and every buffer (small, and a
frozen module's buffers still change: a BatchNorm in train mode updates its running
statistics), and stores a fingerprint of the frozen base in their place: the names, shapes
and dtypes of the frozen parameters and a hash of their values. Loading checks
the fingerprint against the model being resumed, so adapters trained on one base are never
silently applied to another, and fills the frozen entries from that model, so the resume
is exact.

The optimizer, scheduler, loop and RNG state stay in the checkpoint as usual (they are
already small when the optimizer holds only the trainable parameters).
"""

from __future__ import annotations

import ctypes
import hashlib
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenCheckpointError, FulmenConfigError

FINGERPRINT_KEY = "frozen_base"
_SAMPLES = 4096  # values hashed per tensor: enough to tell two trainings apart, cheap for big ones


def _frozen_names(module: nn.Module) -> set:
    """Names (every alias of a tied one) of the parameters that do not require gradients."""
    return {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trainable_state_dict(module: nn.Module, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The entries of ``state`` (default ``module.state_dict()``) that training changes:
    everything but the frozen parameters (so the trainable parameters, and all buffers and
    extra states, which are small and may change in a frozen module too)."""
    state = module.state_dict() if state is None else state
    frozen = _frozen_names(module)
    return {k: v for k, v in state.items() if k not in frozen}


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor, read through ctypes: ``Tensor.numpy()`` would make numpy,
    which torch does not depend on, a requirement of every trainable checkpoint."""
    tensor = tensor.detach().cpu().contiguous()
    return ctypes.string_at(tensor.data_ptr(), tensor.numel() * tensor.element_size())


def _value_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().reshape(-1)
    if flat.numel() > _SAMPLES:  # evenly spaced values, always including the last one
        index = torch.linspace(0, flat.numel() - 1, _SAMPLES, device=flat.device).long()
        flat = flat[index]
    return hashlib.sha256(_tensor_bytes(flat.to(torch.float64))).hexdigest()[:16]


def base_fingerprint(module: nn.Module) -> Dict[str, Any]:
    """Names, shapes, dtypes and a value hash of the frozen parameters of ``module`` (what
    a trainable-only checkpoint relies on being the same when it is loaded). Buffers are
    left out: the checkpoint holds them, and a frozen module's running statistics change."""
    tensors: Dict[str, List[Any]] = {}
    digest = hashlib.sha256()
    for name, tensor in module.named_parameters():
        if tensor.requires_grad:
            continue
        value = _value_digest(tensor)
        tensors[name] = [list(tensor.shape), str(tensor.dtype).replace("torch.", ""), value]
        digest.update(f"{name}:{value};".encode())
    return {"tensors": tensors, "hash": digest.hexdigest()}


def compare_fingerprints(saved: Dict[str, Any], live: Dict[str, Any]) -> List[str]:
    """What differs between two fingerprints, one line each (empty: the same base)."""
    if saved.get("hash") == live.get("hash"):
        return []
    a, b = saved.get("tensors", {}), live.get("tensors", {})
    lines = [f"missing from the model: {n}" for n in sorted(set(a) - set(b))[:5]]
    lines += [f"not in the checkpoint's base: {n}" for n in sorted(set(b) - set(a))[:5]]
    for name in sorted(set(a) & set(b)):
        (shape_a, dtype_a, value_a), (shape_b, dtype_b, value_b) = a[name], b[name]
        if shape_a != shape_b:
            lines.append(f"{name}: shape {shape_a} in the checkpoint's base, {shape_b} in the model")
        elif dtype_a != dtype_b:
            lines.append(f"{name}: dtype {dtype_a} in the checkpoint's base, {dtype_b} in the model")
        elif value_a != value_b:
            lines.append(f"{name}: different values (another pretrained model, or a changed base)")
        if len(lines) >= 10:
            break
    return lines or ["the frozen tensors hash differently"]


def _check_plain(module: nn.Module) -> None:
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) or hasattr(p, "ds_tensor") for p in module.parameters()):
        raise FulmenConfigError(
            "TrainableCheckpoint works on unsharded models (single device, DDP); under a sharding strategy "
            "(FSDP, ZeRO stage 3) the checkpoint is already split across ranks, so drop the callback (or train the adapters with "
            "strategy='ddp', which suits models whose base fits one device)"
        )


class TrainableCheckpoint(Callback):
    """Keep only the trainable parameters in every checkpoint this run writes, with a
    fingerprint of the frozen base; on resume, check the base and restore exactly.

    Use it with any checkpointing (``ModelCheckpoint``, ``trainer.save_checkpoint``):
    ``Trainer(callbacks=[TrainableCheckpoint(), ModelCheckpoint(...)])``. The fingerprint
    is computed at every save and load (a few thousand values per frozen tensor), never
    cached: parameters can be frozen or unfrozen, or reloaded, between two saves.
    Such a file is not a whole model: ``Module.load_from_checkpoint`` cannot rebuild one from
    it; resume through this callback, or write a loadable directory with
    :func:`fulmen.finetune.export_pretrained` on the pretrained model with the same adapters.
    """

    def on_save_checkpoint(self, trainer, module, checkpoint) -> None:
        """Replace the full ``state_dict`` with the trainable tensors and the base's
        fingerprint: the frozen base is already on disk where it came from, so writing it
        again with every checkpoint is what makes LoRA checkpoints large."""
        _check_plain(module)
        if not any(p.requires_grad for p in module.parameters()):
            raise FulmenConfigError(
                "TrainableCheckpoint: no parameter of the model requires gradients, so the checkpoint would "
                "hold no weights; freeze the base and leave the adapters trainable (adapter libraries do), or drop the callback"
            )
        checkpoint["state_dict"] = trainable_state_dict(module, checkpoint["state_dict"])
        checkpoint[FINGERPRINT_KEY] = base_fingerprint(module)

    def on_load_checkpoint(self, trainer, module, checkpoint) -> None:
        """Check that the model's frozen base is the one the checkpoint was trained on (its
        fingerprint), then complete the checkpoint's ``state_dict`` with the base's tensors
        so that the ordinary restore finds every key; a full checkpoint passes unchanged."""
        saved = checkpoint.get(FINGERPRINT_KEY)
        if saved is None:
            return  # a full checkpoint: nothing to fill in
        _check_plain(module)
        differences = compare_fingerprints(saved, base_fingerprint(module))
        if differences:
            raise FulmenCheckpointError(
                "this checkpoint holds trainable parameters for a different frozen base than the model "
                f"being loaded ({'; '.join(differences)}); load the same pretrained weights (and the same "
                "adapter configuration) that the checkpoint was trained on"
            )
        live = module.state_dict()
        unknown = sorted(set(checkpoint["state_dict"]) - set(live))
        if unknown:
            raise FulmenCheckpointError(
                f"the checkpoint's trainable parameters {unknown[:5]} are not in the model; build the model "
                "with the same adapters (adapter config: r, target_modules) as the run that saved it"
            )
        checkpoint["state_dict"] = {**live, **checkpoint["state_dict"]}
