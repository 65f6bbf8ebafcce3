"""Checkpoint runs under DeepSpeed, launched for real by the tests (fulmen re-runs this script
in each of ``--devices`` processes).

One run per launch (``--run`` is a JSON dict), because a run may end in SIGKILL:

    mode "fit"       Trainer.fit with ModelCheckpoint (every ``every_n_steps`` steps, top-2 by
                     val_loss, last), optionally killed (SIGKILL, rank 0) after step
                     ``kill_at_step``, optionally resumed from ``ckpt_path``; with
                     ``evaluate_after`` also validate/test/predict after fit
    mode "validate"  a fresh Trainer's validate(ckpt_path=...) on a fresh model

Rank r writes ``<out>/<name>/rank_<r>.json``: per-micro-batch losses with their global step,
the final global step, the full (gathered) parameters, evaluation results, or the error
raised when ``expect_error`` is set.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import fulmen  # noqa: E402
from ds_helpers import Regressor, loader  # noqa: E402

HANG_DUMP_S = 420

DEFAULTS = {
    "name": "run",
    "mode": "fit",
    "strategy": "deepspeed_stage_3",
    "epochs": 3,
    "batch_size": 4,
    "precision": "32-true",
    "every_n_steps": 4,
    "kill_at_step": None,
    "ckpt_path": None,
    "evaluate_after": False,
    "checkpointing": True,
    # DeepSpeed's universal checkpoint (resume at another world size) knows Adam's state only.
    "optimizer": "sgd",
    "expect_error": False,
}


class StepRecorder(fulmen.Callback):
    """Losses keyed by the step they were computed at, and a SIGKILL of rank 0 after a chosen step."""

    def __init__(self, kill_at_step):
        self.kill_at_step = kill_at_step
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs):
        self.losses.append([trainer.global_step, float(outputs["loss"] if isinstance(outputs, dict) else outputs)])
        if self.kill_at_step is not None and trainer.global_step == self.kill_at_step and trainer.global_rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def full_parameters(trainer, model):
    """Every parameter whole, also where ZeRO-3 holds only partitions (a collective)."""
    import deepspeed

    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params):
        return {name: p.detach().float().flatten().tolist() for name, p in model.named_parameters()}


def _strategy(spec):
    if isinstance(spec, str):
        return spec
    from fulmen_deepspeed import DeepSpeedStrategy

    return DeepSpeedStrategy(**spec)


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.dump_traceback_later(HANG_DUMP_S, repeat=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", required=True, help="default_root_dir, shared by a killed run and its resume")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--run", required=True)
    args = parser.parse_args()
    run = {**DEFAULTS, **json.loads(args.run)}
    out = Path(args.out) / run["name"]
    out.mkdir(parents=True, exist_ok=True)

    fulmen.seed_everything(0)
    recorder = StepRecorder(run["kill_at_step"])
    checkpoint = fulmen.callbacks.ModelCheckpoint(
        monitor="val_loss", save_top_k=2, save_last=True,
    ) if run["mode"] == "fit" and run["checkpointing"] else None
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=_strategy(run["strategy"]), devices=args.devices, max_epochs=run["epochs"],
        precision=run["precision"], default_root_dir=args.root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, num_sanity_val_steps=0,
        val_check_interval=run["every_n_steps"] if checkpoint else None,
        callbacks=[recorder] + ([checkpoint] if checkpoint else []), enable_checkpointing=checkpoint is not None,
    )
    model = Regressor()
    if run["optimizer"] == "adamw":
        model.configure_optimizers = lambda: torch.optim.AdamW(model.parameters(), lr=0.01)
    result = {"rank": trainer.global_rank}
    # 1 process trains on batches twice as large: the same samples per step as 2 processes.
    batch_size = run["batch_size"] * (2 // args.devices if args.devices < 2 else 1)
    try:
        if run["mode"] == "fit":
            trainer.fit(model, loader(64, batch_size), loader(16, batch_size), ckpt_path=run["ckpt_path"])
            if run["evaluate_after"]:
                result["validate"] = trainer.validate(model, loader(16, batch_size), verbose=False)
                result["test"] = trainer.test(model, loader(16, batch_size), verbose=False)
                predictions = trainer.predict(model, loader(8, batch_size))
                result["predictions"] = [p.float().flatten().tolist() for p in predictions]
        else:
            result["validate"] = trainer.validate(model, loader(16, batch_size), ckpt_path=run["ckpt_path"], verbose=False)
    except Exception as exc:  # noqa: BLE001 - the test reads the error
        if not run["expect_error"]:
            raise
        result["error"] = f"{type(exc).__name__}: {exc}"
    else:
        result.update(
            world_size=trainer.world_size,
            global_step=trainer.global_step,
            losses=recorder.losses,
            parameters=full_parameters(trainer, model),
            best=str(checkpoint.best_model_path) if checkpoint else None,
            last=str(checkpoint.last_model_path) if checkpoint else None,
            config_file=str(Path(trainer.log_dir) / "deepspeed_config.json"),
        )
    (out / f"rank_{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
