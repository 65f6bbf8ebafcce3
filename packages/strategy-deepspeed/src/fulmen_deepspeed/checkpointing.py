"""The write side of DeepSpeed checkpoints, and resuming from them at any world size.

A checkpoint is one directory (``checkpoints/last.ckpt/``)::

    fulmen_checkpoint.pt   everything but the weights and optimizer state (loop position,
                           schedulers, callbacks, RNG, hyperparameters) and a header; fulmen's
                           checksummed file, loaded with weights_only=True
    latest, checkpoint/    DeepSpeed's own files (engine.save_checkpoint, tag "checkpoint"):
                           weights, ZeRO partitions of the optimizer state, the loss scaler,
                           the engine's step counters
    fulmen_manifest.json   SHA-256 and size of every other file, written last

Why DeepSpeed's format and not a consolidated one: gathering ZeRO-3 state into one place
is exactly what a model too big for one device cannot afford, and DeepSpeed's own tools
(universal checkpoints, ``zero_to_fp32``) keep working on these directories.

The directory is built under a hidden temporary name and renamed into place only when
every rank's files and the manifest are written, so a kill mid-save leaves the previous
checkpoint of that name whole. The manifest is what makes the directory trustworthy:
before DeepSpeed unpickles anything, every file must match it and load under
``weights_only=True`` (``fulmen_deepspeed.manifest``).

The Trainer (and Fabric) build a checkpoint dict before they know the format: the
strategy answers ``module_state_dict``/``optimizer_state_dict`` with a small marker, which
stands for "in DeepSpeed's files" in the dict and is swapped for the files on load.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, Optional

from fulmen.errors import FulmenCheckpointError
from fulmen.io.atomic import publish_directory, remove_path

from fulmen_deepspeed.layout import FORMAT_NAME, FORMAT_VERSION, HEADER_KEY, MARKER, META_NAME

TAG = "checkpoint"
#: DeepSpeed copies these conversion scripts into every checkpoint; a checkpoint holds no code.
SCRIPTS = ("zero_to_fp32.py", "zero_to_torch.py")
#: What ``ds_to_universal`` asks a checkpoint to carry (Megatron writes it; we must too).
UNIVERSAL_INFO = {"universal_checkpoint_info": {"universal_checkpoint_version": 0.2}}


def marker(kind: str) -> Dict[str, Any]:
    """The stand-in for a state that lives in DeepSpeed's files (``kind``: module/optimizer)."""
    return {MARKER: kind}


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and MARKER in value


def is_deepspeed_checkpoint(path: Any) -> bool:
    """A directory with fulmen's metadata file (complete or damaged: loading says which)."""
    path = Path(path)
    return path.is_dir() and (path / META_NAME).exists()


def temporary_directory(path: Path) -> Path:
    """Every rank must agree on it without talking; not ``*.ckpt``, so never taken for one."""
    return path.with_name(f".{path.name}.deepspeed-tmp")


def _map_markers(checkpoint: Dict[str, Any], fn) -> Dict[str, Any]:
    """``checkpoint`` with every marker (top level, or in a top-level list) replaced by fn(marker)."""
    out = {}
    for key, value in checkpoint.items():
        if is_marker(value):
            out[key] = fn(value)
        elif isinstance(value, list) and any(is_marker(v) for v in value):
            out[key] = [fn(v) if is_marker(v) else v for v in value]
        else:
            out[key] = value
    return out


def save(strategy: Any, engine: Any, checkpoint: Dict[str, Any], path: Any) -> None:
    """Write ``checkpoint`` as a DeepSpeed checkpoint directory at ``path`` (every rank calls this)."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    from fulmen_deepspeed import manifest

    path = Path(path)
    tmp = temporary_directory(path)
    if strategy.is_global_zero:
        remove_path(tmp)  # left over by a save that was killed
        tmp.mkdir(parents=True)
    strategy.barrier("deepspeed.save.prepare")
    engine.save_checkpoint(str(tmp), tag=TAG, client_state=dict(UNIVERSAL_INFO), save_latest=True)
    strategy.barrier("deepspeed.save.written")
    if strategy.is_global_zero:
        for script in SCRIPTS:
            (tmp / script).unlink(missing_ok=True)
        metadata = _map_markers(checkpoint, lambda m: {MARKER: m[MARKER]})
        metadata[HEADER_KEY] = header(strategy, engine)
        TorchCheckpointIO().save_checkpoint(metadata, tmp / META_NAME)
        manifest.write_manifest(tmp)
        publish_directory(tmp, path)
    strategy.barrier("deepspeed.save.published")


def header(strategy: Any, engine: Any) -> Dict[str, Any]:
    import deepspeed

    from fulmen.trainer.step_dispatch import StepDispatcher

    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tag": TAG,
        "world_size": int(strategy.world_size),
        "zero_stage": int(engine.zero_optimization_stage()),
        "deepspeed_version": deepspeed.__version__,
        # The Trainer's engine wraps its step dispatcher, whose child ``module`` is the
        # user's Module; Fabric's wraps the user's model directly.
        "module_prefix": "module." if isinstance(engine.module, StepDispatcher) else "",
    }


def load_metadata(path: Any) -> Dict[str, Any]:
    """Verify the whole directory, then read fulmen's part of it; every marker now carries
    the directory, for the strategy to load DeepSpeed's files from when the engine exists."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    from fulmen_deepspeed import manifest

    path = Path(path)
    manifest.verify_checkpoint_directory(path)
    metadata = TorchCheckpointIO().load_checkpoint(path / META_NAME)
    found = metadata.get(HEADER_KEY)
    if not isinstance(found, dict) or found.get("format") != FORMAT_NAME:
        raise FulmenCheckpointError(f"{str(path)!r} is not a fulmen DeepSpeed checkpoint ({META_NAME} has no header)")
    if int(found.get("version", 0)) > FORMAT_VERSION:
        raise FulmenCheckpointError(
            f"{str(path)!r} uses fulmen's DeepSpeed checkpoint format {found['version']}; upgrade "
            "fulmen-strategy-deepspeed to read it"
        )
    return _map_markers(metadata, lambda m: {MARKER: m[MARKER], "path": str(path)})


def saved_header(path: Any) -> Dict[str, Any]:
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    return TorchCheckpointIO().load_checkpoint(Path(path) / META_NAME)[HEADER_KEY]


def load_into_engine(strategy: Any, engine: Any, path: str, strict: bool = True) -> None:
    """Weights, optimizer partitions, loss scaler and step counters into a training engine.
    Saved by another number of processes: through DeepSpeed's universal checkpoint, made
    from the (already verified) directory next to it and deleted afterwards."""
    from fulmen_deepspeed import safe_load

    saved = saved_header(path)
    safe_load.install(engine)
    if int(saved["world_size"]) == strategy.world_size:
        loaded, _ = engine.load_checkpoint(path, tag=saved["tag"], load_module_strict=strict,
                                           load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise FulmenCheckpointError(f"DeepSpeed found no checkpoint under {path!r} (tag {saved['tag']!r})")
        return
    universal = Path(path).with_name(f".{Path(path).name}.universal-{strategy.world_size}")
    failure = None
    if strategy.is_global_zero:
        remove_path(universal)
        try:
            to_universal(Path(path) / saved["tag"], universal / "universal")
        except FulmenCheckpointError as exc:
            remove_path(universal)  # nothing half-converted stays next to the checkpoint
            failure = str(exc)
    # Every rank raises the same error, rather than waiting for a load that never comes.
    failure = strategy.broadcast(failure, src=0)
    if failure is not None:
        raise FulmenCheckpointError(failure)
    config = engine._config
    previous = config.load_universal_checkpoint
    config.load_universal_checkpoint = True
    try:
        loaded, _ = engine.load_checkpoint(str(universal), tag="universal", load_module_strict=strict,
                                           load_optimizer_states=True, load_lr_scheduler_states=False)
    finally:
        config.load_universal_checkpoint = previous
        strategy.barrier("deepspeed.universal.loaded")
        if strategy.is_global_zero:
            remove_path(universal)
    if loaded is None:
        raise FulmenCheckpointError(f"DeepSpeed could not load the universal form of {path!r}")


def to_universal(tag_dir: Path, out: Path) -> None:
    """DeepSpeed's ``ds_to_universal`` in this process: the per-parameter form that loads at
    any world size. It unpickles with weights_only=False, so only verified input reaches it."""
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(tag_dir), output_folder=str(out), num_extract_workers=1, num_merge_workers=1,
        keep_temp_folder=False, strict=True, inject_missing_state=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = os.getcwd()
    try:
        ds_to_universal.main(args)
    except KeyError as exc:
        raise FulmenCheckpointError(
            f"{str(tag_dir)!r} cannot be resumed at another number of processes: DeepSpeed's universal "
            f"checkpoint carries the state of Adam-type optimizers only (exp_avg, exp_avg_sq) and this "
            f"optimizer's state has no {exc}. Resume with the number of processes that saved it, or start a "
            "new fit from its weights (fulmen-deepspeed convert DIR OUT.ckpt; Module.load_from_checkpoint)"
        ) from exc
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise FulmenCheckpointError(
            f"converting {str(tag_dir)!r} to DeepSpeed's universal checkpoint (to resume at another number "
            f"of processes) failed: {type(exc).__name__}: {exc}. Resume with the number of processes that "
            "saved it, or start from its weights: fulmen-deepspeed convert DIR OUT.ckpt"
        ) from exc
    finally:
        os.chdir(previous)


def load_full_weights(strategy: Any, engine: Optional[Any], module: Any, state: Dict[str, Any], strict: bool) -> None:
    """Full (unsharded) weights into a module that ZeRO-3 may have partitioned: one parameter
    gathered at a time, written by rank 0 and re-partitioned, so no rank ever holds the whole
    model twice. The optimizer's fp32 master copy is refreshed from the new weights."""
    import deepspeed
    import torch

    own = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    expected = set(module.state_dict().keys())  # without non-persistent buffers
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if strict and (missing or unexpected):
        raise FulmenCheckpointError(
            f"the checkpoint's weights do not match {type(module).__name__}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; load with strict=False to skip them"
        )
    with torch.no_grad():
        for name, param in own.items():
            if name not in state:
                continue
            if hasattr(param, "ds_id"):  # partitioned by ZeRO-3
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    if strategy.global_rank == 0:
                        param.data.copy_(state[name])
            else:
                param.data.copy_(state[name])
        for name, buffer in buffers.items():
            if name in state and name in expected:
                buffer.copy_(state[name])
    optimizer = getattr(engine, "optimizer", None)
    refresh = getattr(optimizer, "_restore_from_bit16_weights", None)
    if callable(refresh):
        refresh()
