"""Trainer runs under DeepSpeed (and DDP, the reference), launched for real by the tests:
2 processes started by fulmen re-running this script.

``--runs`` is a JSON list of runs done one after another in the same processes (a launch
costs ~10 s plus deepspeed's import; several runs share it). Each rank writes
``<out>/<run name>/rank_<r>.json`` with its per-micro-batch losses, the global step and the
effective DeepSpeed config, or the error a run raised when ``expect_error`` is set.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fulmen  # noqa: E402
import torch  # noqa: E402
from ds_helpers import Regressor, loader  # noqa: E402

HANG_DUMP_S = 420  # under the launch timeout, above a slow but healthy launch

DEFAULTS = {
    "name": "run",
    "strategy": "ddp",  # a registry name, or {"stage": .., "config": {..}} for a DeepSpeedStrategy
    "epochs": 2,
    "batch_size": 4,
    "accumulate": 1,
    "clip": None,
    "expect_error": False,
    "precision": "32-true",
    # "regressor"; "configure_model": layers built in configure_model (zero.Init under stage 3);
    # "config_optimizer": configure_optimizers returns None, the DeepSpeed config has the optimizer
    "model": "regressor",
}


class LateRegressor(Regressor):
    """Builds its layers in configure_model and records whether they were partitioned as made."""

    def __init__(self) -> None:
        super().__init__()
        del self.net
        self.partitioned_at_creation = None

    def configure_model(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                                       torch.nn.Tanh(), torch.nn.Linear(32, 2))
        self.partitioned_at_creation = all(p.numel() == 0 and hasattr(p, "ds_id") for p in self.net.parameters())


class ConfigOptimizerRegressor(Regressor):
    def configure_optimizers(self):
        return None


class ScheduledRegressor(Regressor):
    """StepLR every 2 optimizer steps (interval "step", frequency 2): the Trainer steps it."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 2}}


MODELS = {"regressor": Regressor, "configure_model": LateRegressor, "config_optimizer": ConfigOptimizerRegressor,
          "scheduler": ScheduledRegressor}


def _strategy(spec):
    if isinstance(spec, str):
        return spec
    from fulmen_deepspeed import DeepSpeedStrategy

    return DeepSpeedStrategy(**spec)


def train(run: dict, devices: int, out: Path) -> None:
    run = {**DEFAULTS, **run}
    out = out / run["name"]
    out.mkdir(parents=True, exist_ok=True)
    fulmen.seed_everything(0)
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=_strategy(run["strategy"]), devices=devices, max_epochs=run["epochs"],
        accumulate_grad_batches=run["accumulate"], gradient_clip_val=run["clip"], logger=False,
        default_root_dir=out, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        num_sanity_val_steps=0, enable_checkpointing=False, precision=run["precision"],
    )
    model = MODELS[run["model"]]()
    result = {"rank": trainer.global_rank}
    try:
        trainer.fit(model, loader(64, run["batch_size"]), loader(16, run["batch_size"]))
    except Exception as exc:  # noqa: BLE001 - the test reads the error
        if not run["expect_error"]:
            raise
        result["error"] = f"{type(exc).__name__}: {exc}"
    else:
        strategy = trainer.strategy
        result.update(
            world_size=trainer.world_size,
            global_step=trainer.global_step,
            strategy=type(strategy).__name__,
            losses=model.losses,
            config=getattr(strategy, "effective_config", None),
            partitioned_at_creation=getattr(model, "partitioned_at_creation", None),
            final_lr=trainer.optimizers[0].param_groups[0]["lr"],
            environment=type(strategy.cluster_environment).__name__,
            engine_dtype=str(next(strategy.engine.module.parameters()).dtype) if hasattr(strategy, "engine") else None,
        )
    (out / f"rank_{result['rank']}.json").write_text(json.dumps(result))


def main() -> None:
    # A hung launch leaves every thread's stack in its log: on kill -USR1, and by itself
    # after HANG_DUMP_S (the tests' launch timeout is longer).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.dump_traceback_later(HANG_DUMP_S, repeat=False)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--runs", required=True, help="JSON list of run options")
    args = parser.parse_args()
    for run in json.loads(args.runs):
        train(run, args.devices, Path(args.out))


if __name__ == "__main__":
    main()
