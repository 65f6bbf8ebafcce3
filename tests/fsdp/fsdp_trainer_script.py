"""Trainer runs under FSDP, launched for real by the FSDP tests (2 processes started by
fulmen re-running this script, or 1 process).

``--runs`` is a JSON list of runs done one after another in the same processes (a launch
costs seconds; several runs share it). Each run's options (defaults in ``DEFAULTS``) pick
the strategy, data, precision tricks and checkpoints. Each rank writes
``<out>/<run name>/rank_<r>.json`` with the world size, steps, every parameter's full
value and this rank's local shard shape; ``final_full``/``final_sharded`` save the end
state as a full (one file) or sharded (one directory) checkpoint for cross-launch checks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fulmen  # noqa: E402
from fsdp_helpers import Block, TinyGPT, token_loader  # noqa: E402

DEFAULTS = {
    "name": "run",
    "strategy": "policies",  # an FSDPStrategy with per-block units and activation checkpointing, or a name
    "epochs": 2,
    "batch_size": 8,
    "accumulate": 1,
    "clip": None,
    "dropout": 0.0,
    "meta_init": False,
    "shuffle": False,
    "ckpt_path": None,
    "every": 2,  # checkpoint every N optimizer steps
    "kill_at_step": None,
    "final_full": None,
    "final_sharded": None,
    "accelerator": "cpu",
    "precision": "32-true",
}


class KillAt(fulmen.Callback):
    """SIGKILL rank 0 when the batch after optimizer step ``step`` starts (its checkpoint is
    on disk by then); the rank that fulmen started notices its parent is gone and exits."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer):
        if trainer.global_step == self.step and trainer.global_rank == 0:
            print(f"KILLING at step {trainer.global_step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def train(run: dict, devices: int, out: Path) -> None:
    run = {**DEFAULTS, **run}
    out = out / run["name"]
    if run["strategy"] == "policies":
        from fulmen_fsdp import FSDPStrategy

        strategy = FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block}, timeout=60)
    else:
        strategy = run["strategy"]
    fulmen.seed_everything(0)
    callbacks = [fulmen.callbacks.ModelCheckpoint(dirpath=out / "ckpts", every_n_train_steps=run["every"],
                                                  save_top_k=-1, save_last=True)]
    if run["kill_at_step"] is not None:
        callbacks.append(KillAt(run["kill_at_step"]))
    trainer = fulmen.Trainer(
        accelerator=run["accelerator"], precision=run["precision"], strategy=strategy, devices=devices,
        max_epochs=run["epochs"],
        accumulate_grad_batches=run["accumulate"], gradient_clip_val=run["clip"], logger=False,
        default_root_dir=out, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        num_sanity_val_steps=0, callbacks=callbacks,
    )
    model = TinyGPT(dropout=run["dropout"], meta_init=run["meta_init"])
    trainer.fit(model, token_loader(64, run["batch_size"], shuffle=run["shuffle"]), token_loader(16, run["batch_size"]),
                ckpt_path=run["ckpt_path"])

    strategy = trainer.strategy
    local_shapes = {name: list(p.to_local().shape) for name, p in model.named_parameters()}
    full = {name: p.full_tensor().flatten().tolist() for name, p in model.named_parameters()}
    if run["final_full"]:
        strategy.state_dict_type = "full"
        trainer.save_checkpoint(run["final_full"])
    if run["final_sharded"]:
        strategy.state_dict_type = "sharded"
        trainer.save_checkpoint(run["final_sharded"])
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "strategy": type(strategy).__name__,
        "mesh": list(strategy.device_mesh.shape),
        "built_on_meta": model.built_on_meta,
        "local_shapes": local_shapes,
        "params": full,
        "lr": trainer.optimizers[0].optimizer.param_groups[0]["lr"],
        "param_dtype": str(next(model.parameters()).dtype),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank_{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--runs", required=True, help="JSON list of run options")
    args = parser.parse_args()
    for run in json.loads(args.runs):
        train(run, args.devices, Path(args.out))


if __name__ == "__main__":
    main()
