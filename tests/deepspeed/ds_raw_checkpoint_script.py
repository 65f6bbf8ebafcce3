"""Writes real fulmen DeepSpeed checkpoint directories, as the strategy lays them out, for
test_deepspeed_checkpoint_files.py; run under ``torch.distributed.run --nproc-per-node 2``.

Phase 1, per ZeRO stage (2 and 3): a few AdamW steps on a tiny model wrapped like the
Trainer's dispatcher (names ``module.net...``), with a frozen layer and BatchNorm buffers and
odd-sized parameters (ZeRO-3 pads them); ``engine.save_checkpoint``, then on rank 0 the copied
scripts deleted, ``fulmen_checkpoint.pt`` with its header and ``fulmen_manifest.json`` last.
The weights gathered from the live engine go to ``stage{N}/reference.pt``: what a converter
must give back, exactly.

Phase 2: fresh engines with ``safe_load.install`` load each clean checkpoint (DeepSpeed's
own reads under weights_only=True) and, at stage 2, copies whose model states or optimizer
partitions were replaced by a pickle that would write a marker file; ``rank_{r}.json``
records what happened.
"""

from __future__ import annotations

import argparse
import json
import shutil
import traceback
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from torch import nn

from fulmen.io.checkpoint_io import TorchCheckpointIO
from fulmen_deepspeed import safe_load
from fulmen_deepspeed.layout import FORMAT_NAME, FORMAT_VERSION, HEADER_KEY, MARKER, META_NAME
from fulmen_deepspeed.manifest import write_manifest

TAG = "checkpoint"
HPARAMS = {"width": 7, "frozen_width": 7}
STEPS = 3


class Net(nn.Module):
    """The user's model: odd sizes (35, 7, 21 elements), a frozen layer, BatchNorm buffers."""

    def __init__(self, width: int = 7, frozen_width: int = 7) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, width), nn.BatchNorm1d(width), nn.Tanh(),
                                 nn.Linear(width, frozen_width), nn.Tanh(), nn.Linear(frozen_width, 3))
        self.net[3].requires_grad_(False)

    def forward(self, x):
        return self.net(x)


class Dispatcher(nn.Module):
    """Stands for the Trainer's wrapper: DeepSpeed's names gain the ``module.`` prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.module = Net(**HPARAMS)

    def forward(self, x):
        return self.module(x)


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def build(stage: int):
    torch.manual_seed(0)
    model = Dispatcher()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def gathered(engine, stage: int):
    """The full weights and buffers by DeepSpeed's names, from the live engine (every rank calls)."""
    params = dict(engine.module.named_parameters())
    full = {}
    for name, param in params.items():
        if param.requires_grad:
            full[name] = deepspeed.utils.safe_get_full_fp32_param(param).detach().clone().cpu()
    frozen = [p for p in params.values() if not p.requires_grad]
    with deepspeed.zero.GatheredParameters(frozen, enabled=stage == 3):
        for name, param in params.items():
            if not param.requires_grad:
                full[name] = param.detach().clone().float().cpu()
    for name, buffer in engine.module.named_buffers():
        full[name] = buffer.detach().clone().cpu()
    return full


def train_and_save(out: Path, stage: int, rank: int) -> None:
    engine = build(stage)
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(STEPS):
        x = torch.randn(4, 5, generator=generator)
        loss = engine(x).pow(2).mean()
        engine.backward(loss)
        engine.step()
    reference = gathered(engine, stage)
    root = out / f"stage{stage}"
    directory = root / "epoch=0-step=3.ckpt"
    if rank == 0:
        directory.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(directory), tag=TAG,
                           client_state={"universal_checkpoint_info": {"universal_checkpoint_version": 0.2}})
    dist.barrier()
    if rank == 0:
        for script in ("zero_to_fp32.py", "zero_to_torch.py"):
            (directory / script).unlink(missing_ok=True)
        metadata = {
            "format": "fulmen.checkpoint", "format_version": 1, "fulmen_version": "0.1.0",
            "epoch": 0, "global_step": STEPS, "hyper_parameters": dict(HPARAMS),
            "state_dict": {MARKER: "module"}, "optimizer_states": [{MARKER: "optimizer"}],
            "loops": {"fit": {"current_epoch": 0, "global_step": STEPS}}, "lr_schedulers": [], "callbacks": {},
            "rng": {"torch": torch.get_rng_state()}, "note": "kept by the converter",
            HEADER_KEY: {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tag": TAG,
                         "world_size": dist.get_world_size(), "zero_stage": stage,
                         "deepspeed_version": deepspeed.__version__, "module_prefix": "module."},
        }
        TorchCheckpointIO().save_checkpoint(metadata, directory / META_NAME)
        write_manifest(directory)
        torch.save(reference, root / "reference.pt")
    dist.barrier()


def attempt_load(directory: Path, stage: int, result: dict, key: str, reference=None) -> None:
    engine = build(stage)
    installed = safe_load.install(engine)
    result[f"{key}_engine"] = type(installed).__name__
    try:
        path, _ = engine.load_checkpoint(str(directory), tag=TAG)
        result[key] = "loaded" if path is not None else "nothing loaded"
        if reference is not None:
            got = gathered(engine, stage)
            buffers = {name for name, _ in engine.module.named_buffers()}
            assert sorted(got) == sorted(reference)
            # ZeRO-3 gives each rank back its own buffers; the reference holds rank 0's.
            for kind, names in (("params", set(got) - buffers), ("buffers", buffers)):
                result[f"{key}_{kind}_equal"] = all(torch.equal(got[k], reference[k]) for k in names)
    except Exception as exc:  # recorded for the test, which checks the type and the file named
        result[key] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    dist.barrier()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    out = parser.parse_args().out
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    result = {"rank": rank}
    try:
        for stage in (2, 3):
            train_and_save(out, stage, rank)
        for stage in (2, 3):
            directory = out / f"stage{stage}" / "epoch=0-step=3.ckpt"
            reference = torch.load(out / f"stage{stage}" / "reference.pt", weights_only=True)
            attempt_load(directory, stage, result, f"clean_stage{stage}", reference)
        clean = out / "stage2" / "epoch=0-step=3.ckpt"
        swaps = {"evil_model": ["mp_rank_00_model_states.pt"],
                 "evil_optim": [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(dist.get_world_size())]}
        for key, names in swaps.items():
            evil = out / "install" / key
            if rank == 0:
                shutil.copytree(clean, evil)
                for name in names:
                    torch.save({"module": Payload(str(out / "install" / f"{key}.marker"))}, evil / TAG / name)
            dist.barrier()
            attempt_load(evil, 2, result, key)
    except Exception:
        result["error"] = traceback.format_exc()
        raise
    finally:
        (out / f"rank_{rank}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
