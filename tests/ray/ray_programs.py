"""The training program the Ray tests run, the same code under Ray Train and under fulmen's
own DDP (the reference): a small regression with Adam, shuffled data, dropout, a CSV logger,
and a ``ModelCheckpoint`` every few steps, so that resuming exactly needs every piece of
fulmen's state (parameters, Adam's moments, sampler position, RNG, loop counters).

Ray workers unpickle the training function; ``conftest.py`` has this module pickled by
value, so the workers need not import it from the tests folder. Run as a script it is the
DDP reference: ``python ray_programs.py OUT``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EVERY_N_STEPS = 3
MAX_EPOCHS = 2
SAMPLES, BATCH = 96, 8  # 2 ranks: 6 batches an epoch each, 12 steps in all


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def _module_class():
    import fulmen

    class RegressionModule(fulmen.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Regression()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.01)

    return RegressionModule


def _data() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(SAMPLES, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)


def _kill_switch(config: Dict[str, Any]):
    """At step ``kill_at_step`` of the first attempt, worker ``kill_rank`` writes its PID and
    waits; the test's watcher SIGKILLs it. The marker file makes later attempts skip it."""
    import fulmen

    class KillSwitch(fulmen.Callback):
        def on_train_batch_end(self, trainer):
            if trainer.global_step != config["kill_at_step"] or trainer.global_rank != config["kill_rank"]:
                return
            marker = Path(config["pid_file"])
            if marker.exists():
                return  # a restarted attempt: train through
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.rename(marker)
            time.sleep(120)  # killed here; a test that never kills it fails on its own
            os.kill(os.getpid(), signal.SIGKILL)

    return KillSwitch()


def _logger_view(config: Dict[str, Any]):
    """What a callback sees of the Trainer's loggers while it trains, written per rank: the
    user's loggers only, whatever fulmen_ray attaches to collect rows."""
    import json

    import fulmen

    class LoggerView(fulmen.Callback):
        def on_train_start(self, trainer):
            view = {
                "logger": type(trainer.logger).__name__ if trainer.logger is not None else None,
                "loggers": [type(logger).__name__ for logger in trainer.loggers],
                "log_dir": trainer.log_dir, "default_root_dir": str(trainer.default_root_dir),
            }
            Path(config["out"], f"loggers{trainer.global_rank}.json").write_text(json.dumps(view))

    return LoggerView()


def fit(config: Dict[str, Any], strategy: Any, devices: int = 1, ckpt_path: Optional[str] = None,
        extra_callbacks=()):
    """Train and write ``final.ckpt`` (every rank takes part; rank zero writes it)."""
    import fulmen
    from fulmen.callbacks import ModelCheckpoint
    from fulmen.loggers import CSVLogger

    out = Path(config["out"])
    fulmen.seed_everything(0)
    module = _module_class()()
    callbacks = [ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=EVERY_N_STEPS, save_top_k=1)]
    callbacks += list(extra_callbacks)
    if config.get("kill_at_step"):
        callbacks.append(_kill_switch(config))
    callbacks.append(_logger_view(config))
    out.mkdir(parents=True, exist_ok=True)
    logger = False if config.get("no_logger") else CSVLogger(out, name="csv", version=0)
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=strategy, devices=devices, max_epochs=MAX_EPOCHS,
        logger=logger, callbacks=callbacks, log_every_n_steps=1, default_root_dir=out,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
    )
    trainer.fit(module, train_dataloaders=_data(), ckpt_path=ckpt_path)
    trainer.save_checkpoint(out / "final.ckpt")
    return trainer


def ray_train_fn(config: Dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    import fulmen_ray

    torch.set_num_threads(1)
    resume = fulmen_ray.resume_checkpoint()
    trainer = fit(config, strategy="ray", extra_callbacks=[fulmen_ray.RayTrainReportCallback()], ckpt_path=resume)
    _write_worker_view(config, resume, trainer)


def _write_worker_view(config: Dict[str, Any], resume: Optional[str], trainer) -> None:
    """What this worker saw of its job: the environment the Trainer's strategy has, its
    ranks, where it resumed from, the process group's backend, and a Fabric collective on the
    same worker group."""
    import json

    import ray.train
    import torch.distributed as dist

    import fulmen

    env = trainer.strategy.cluster_environment
    fabric = fulmen.Fabric(accelerator="cpu", strategy="ray")
    fabric.launch()
    total = fabric.all_reduce(torch.tensor([fabric.global_rank + 1.0]), reduce_op="sum")
    view = {
        "environment": type(env).__name__, "world_size": env.world_size(), "global_rank": env.global_rank(),
        "local_rank": env.local_rank(), "node_rank": env.node_rank(),
        "ray_world_rank": ray.train.get_context().get_world_rank(), "trainer_world_size": trainer.world_size,
        "pid": os.getpid(), "resumed_from": resume, "backend": dist.get_backend(),
        "fabric_world_size": fabric.world_size, "fabric_all_reduce": total.item(),
    }
    Path(config["out"], f"worker{view['global_rank']}.json").write_text(json.dumps(view))


if __name__ == "__main__":
    torch.set_num_threads(1)
    fit({"out": sys.argv[1]}, strategy="ddp", devices=2)
