"""Reading a fulmen DeepSpeed checkpoint directory as one ordinary fulmen checkpoint.

``Module.load_from_checkpoint(DIR)`` (through the plugin's ``read_checkpoint_directory``
hook) and ``fulmen-deepspeed convert DIR OUT`` both come here: the directory is verified
against its manifest, DeepSpeed's per-rank files are put together into full fp32 weights on
one CPU process (``zero_shards``), named as in the user's Module, and returned with the
Trainer's metadata as a *weights* checkpoint. The optimizer state stays behind: a ZeRO
partition only means something to an engine at the world size that wrote it, so the entries
that would make the core resume a fit (``loops``, ``optimizer_states``, ...) are dropped,
and the core says "holds weights only" instead of failing halfway through a resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from fulmen.errors import FulmenCheckpointError
from fulmen.io.manifest import manifest_format

from fulmen_deepspeed.layout import FORMAT_NAME, FORMAT_VERSION, HEADER_KEY, MANIFEST_NAME, MARKER, META_NAME
from fulmen_deepspeed.manifest import MANIFEST_FORMAT

PathLike = Union[str, os.PathLike]

#: What only a resumed fit reads (see fulmen.trainer.checkpoint.dump_checkpoint).
RESUME_KEYS = ("loops", "metrics", "optimizer_states", "lr_schedulers", "precision", "callbacks",
               "datamodule", "train_dataloader", "rng", "loggers")

_MODEL_12 = re.compile(r"mp_rank_(\d+)_model_states\.pt")
_MODEL_3 = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt")
_OPTIM = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt")


def read_metadata(directory: PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(metadata, header)`` from ``fulmen_checkpoint.pt`` (checksummed, weights_only) of a
    directory that was already verified; the header is checked for what the readers rely on."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    directory = Path(directory)
    metadata = TorchCheckpointIO().load_checkpoint(directory / META_NAME)
    header = metadata.get(HEADER_KEY)
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FulmenCheckpointError(
            f"{str(directory / META_NAME)!r} has no {HEADER_KEY!r} header: {str(directory)!r} is not a fulmen "
            "DeepSpeed checkpoint"
        )
    if int(header.get("version", 0)) > FORMAT_VERSION:
        raise FulmenCheckpointError(
            f"{str(directory)!r} uses fulmen's DeepSpeed checkpoint format {header['version']}; upgrade "
            "fulmen-strategy-deepspeed to read it"
        )
    tag, world, stage = header.get("tag"), header.get("world_size"), header.get("zero_stage")
    if (not isinstance(tag, str) or tag in ("", ".", "..") or "/" in tag or "\\" in tag
            or not isinstance(world, int) or world < 1 or stage not in (1, 2, 3)
            or not isinstance(header.get("module_prefix", ""), str)):
        raise FulmenCheckpointError(
            f"the header in {str(directory / META_NAME)!r} is not one fulmen writes (tag {tag!r}, world size "
            f"{world!r}, ZeRO stage {stage!r}); use another checkpoint"
        )
    return metadata, header


def _shard_files(directory: Path, manifest: Dict[str, Any], header: Dict[str, Any]):
    """The model-states files (one for ZeRO 1/2, one per rank for ZeRO-3) and the optimizer
    files in rank order, from the verified manifest; anything else in the tag folder is refused."""
    tag, world, stage = header["tag"], header["world_size"], header["zero_stage"]
    models: Dict[int, str] = {}
    optims: Dict[int, str] = {}
    for relative in sorted(manifest["files"]):
        if not relative.startswith(tag + "/"):
            continue
        name = relative[len(tag) + 1:]
        match = _OPTIM.fullmatch(name) or _MODEL_3.fullmatch(name) or _MODEL_12.fullmatch(name)
        if match is None:
            raise FulmenCheckpointError(
                f"{str(directory / relative)!r} is not a file fulmen's converter reads (pipeline, tensor or "
                "expert parallel checkpoints are not supported); use DeepSpeed's own tools for it"
            )
        if int(match.groups()[-1]) != 0:
            raise FulmenCheckpointError(
                f"{str(directory / relative)!r} belongs to model-parallel rank {int(match.groups()[-1])}: tensor or "
                "pipeline parallel checkpoints are not supported; use DeepSpeed's own tools for it"
            )
        target = optims if match.re is _OPTIM else models
        rank = int(match.group(1)) if match.re is not _MODEL_12 else -1
        if rank in target:
            raise FulmenCheckpointError(
                f"{str(directory / tag)!r} holds two files for rank {rank} ({target[rank]!r} and {name!r}); "
                "use another checkpoint"
            )
        target[rank] = name
    expected_models = [-1] if stage <= 2 else list(range(world))
    for found, expected, what in ((optims, list(range(world)), "optimizer"), (models, expected_models, "model-states")):
        if sorted(found) != expected:
            raise FulmenCheckpointError(
                f"{str(directory / tag)!r} has {what} files for ranks {sorted(found)}, but the checkpoint was "
                f"written by {world} process(es) at ZeRO stage {stage}; it is incomplete, use another one"
            )
    folder = directory / tag
    return [folder / models[r] for r in expected_models], [folder / optims[r] for r in range(world)]


def _consolidate(directory: Path, manifest: Dict[str, Any], header: Dict[str, Any]):
    from fulmen_deepspeed import safe_load, zero_shards

    model_files, optim_files = _shard_files(directory, manifest, header)
    # Memory-mapped: the optimizer moments are never touched, so never read.
    models = [safe_load.load(path, map_location="cpu", mmap=True) for path in model_files]
    optims = [safe_load.load(path, map_location="cpu", mmap=True) for path in optim_files]
    where = f"checkpoint {str(directory)!r}"
    try:
        full = zero_shards.full_state_dict(models, optims, where)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        # Verified files, so not damage: a layout this reader does not know (another DeepSpeed).
        raise FulmenCheckpointError(
            f"{where}: DeepSpeed's files (written by deepspeed {header.get('deepspeed_version')}) are not laid out "
            f"as fulmen's reader expects ({type(exc).__name__}: {exc}). DeepSpeed's own zero_to_fp32 may read "
            "them, but it unpickles with weights_only=False: use it only on files you trust"
        ) from exc
    if int(optims[0]["optimizer_state_dict"]["zero_stage"]) != header["zero_stage"]:
        raise FulmenCheckpointError(
            f"{str(directory)!r}: the header says ZeRO stage {header['zero_stage']}, DeepSpeed's files stage "
            f"{int(optims[0]['optimizer_state_dict']['zero_stage'])}; use another checkpoint"
        )
    prefix = header.get("module_prefix", "")
    foreign = [name for name in full if not name.startswith(prefix)]
    if foreign:
        raise FulmenCheckpointError(
            f"{str(directory)!r}: DeepSpeed's parameter names should all start with {prefix!r} (the module "
            f"prefix in the header) but {foreign[:3]} do not; use another checkpoint"
        )
    return {name[len(prefix):]: tensor for name, tensor in full.items()}


def read_full_state_dict(directory: PathLike) -> Dict[str, Any]:
    """The consolidated fp32 weights and buffers of a verified checkpoint directory, keyed as
    in the user's Module (``net.0.weight``, not DeepSpeed's ``module.net.0.weight``)."""
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    directory = Path(directory)
    manifest = verify_checkpoint_directory(directory)
    _, header = read_metadata(directory)
    return _consolidate(directory, manifest, header)


def is_fulmen_deepspeed_checkpoint(directory: PathLike) -> bool:
    """Whether ``directory`` claims to be one of ours (damaged or not: reading it says which):
    it has our manifest, or a ``fulmen_checkpoint.pt`` with our header. A plain DeepSpeed
    checkpoint is refused here, since nothing vouches for its pickles."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    directory = Path(directory)
    if not directory.is_dir():
        return False
    claimed = manifest_format(directory)
    if claimed is not None:  # another backend's manifest (XLA SPMD) is not ours; a damaged one is reported
        return claimed in (MANIFEST_FORMAT, "")
    if (directory / META_NAME).is_file():
        # fulmen's own checksummed, weights_only reader: safe on anyone's file.
        return HEADER_KEY in TorchCheckpointIO().load_checkpoint(directory / META_NAME)
    if (directory / "latest").is_file() and any(directory.glob("*/*_model_states.pt")):
        raise FulmenCheckpointError(
            f"{str(directory)!r} is a DeepSpeed checkpoint that fulmen did not write: it has no manifest, so "
            "nothing vouches for its files, and DeepSpeed's pickles can run code. If you trust it, convert it "
            "with DeepSpeed's zero_to_fp32.py and load the result"
        )
    return False


def read_checkpoint(directory: PathLike) -> Optional[Dict[str, Any]]:
    """``directory`` as a fulmen weights checkpoint (metadata, hyperparameters and the full
    ``state_dict``), or None when it is not a fulmen DeepSpeed checkpoint. Damaged or
    tampered directories raise FulmenCheckpointError naming the file."""
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    directory = Path(directory)
    if not is_fulmen_deepspeed_checkpoint(directory):
        return None
    manifest = verify_checkpoint_directory(directory)
    metadata, header = read_metadata(directory)
    checkpoint = {
        key: value for key, value in metadata.items()
        if key not in RESUME_KEYS and key != HEADER_KEY and not _is_marker(value)
    }
    checkpoint["state_dict"] = _consolidate(directory, manifest, header)
    return checkpoint


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and MARKER in value


def convert_checkpoint(directory: PathLike, output: PathLike) -> Path:
    """Write ``directory`` as the single file ``output`` (fulmen's atomic, checksummed format):
    ``Module.load_from_checkpoint(output)`` and ``torch.load(output, weights_only=True)`` open
    it; it holds weights, not optimizer state, so a fit starts from it rather than resumes."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    directory, output = Path(directory), Path(output)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} does not exist")
    if directory.is_file():
        raise FulmenCheckpointError(f"{str(directory)!r} is a file already, not a DeepSpeed checkpoint directory")
    target, source = output.resolve(), directory.resolve()
    if target == source or source in target.parents:
        raise FulmenCheckpointError(
            f"the output {str(output)!r} would overwrite or change the checkpoint {str(directory)!r} it is read "
            "from; write it somewhere else"
        )
    if output.is_dir():
        raise FulmenCheckpointError(f"the output {str(output)!r} is a directory; name the file to write")
    checkpoint = read_checkpoint(directory)
    if checkpoint is None:
        raise FulmenCheckpointError(
            f"{str(directory)!r} is not a fulmen DeepSpeed checkpoint (it has neither {MANIFEST_NAME} nor a "
            f"{META_NAME} with a DeepSpeed header)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    TorchCheckpointIO().save_checkpoint(checkpoint, output)
    return output


def describe(directory: PathLike) -> Dict[str, Any]:
    """What ``fulmen-deepspeed info`` prints: the header, the verified files, and the number of
    tensors and elements of the full state dict (from the recorded shapes, nothing consolidated)."""
    from fulmen_deepspeed import safe_load
    from fulmen_deepspeed.manifest import verify_checkpoint_directory

    directory = Path(directory)
    manifest = verify_checkpoint_directory(directory)
    metadata, header = read_metadata(directory)
    model_files, _ = _shard_files(directory, manifest, header)
    model = safe_load.load(model_files[0], map_location="cpu", mmap=True)
    shapes = [shape for group in model["param_shapes"] for shape in group.values()]
    shapes += list((model.get("frozen_param_shapes") or {}).values())
    module = model["module"]
    buffers = [module[name].numel() for name in model.get("buffer_names", []) if name in module]
    return {
        **{key: header.get(key) for key in ("world_size", "zero_stage", "deepspeed_version", "tag", "module_prefix")},
        "epoch": metadata.get("epoch"),
        "global_step": metadata.get("global_step"),
        "files": len(manifest["files"]),
        "bytes": sum(entry["size"] for entry in manifest["files"].values()),
        "tensors": len(module),
        "elements": sum(int(s.numel()) for s in shapes) + sum(buffers),
    }
