"""A training script run under real multi-process launches by test_ddp.py.

Each rank writes ``<out>/rank_<global rank>.json`` with what the tests compare: final
parameters, optimizer state summary, step counts, synced metrics and how many gradient
all-reduces DDP performed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/ for helpers

import torch  # noqa: E402

import fulmen  # noqa: E402
from helpers import BoringModule, loader  # noqa: E402


class CountingModule(BoringModule):
    """Logs a rank-dependent value with sync_dist and counts DDP's gradient all-reduces."""

    def __init__(self, fail_rank: int = -1, fail_mode: str = "", fail_batch: int = 2):
        super().__init__()
        self.fail_rank, self.fail_mode, self.fail_batch = fail_rank, fail_mode, fail_batch
        self.allreduces = 0

    def on_train_start(self, trainer):
        ddp = trainer._forward_module._forward_module
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            def counting_hook(state, bucket):
                self.allreduces += 1
                work = torch.distributed.all_reduce(bucket.buffer().div_(trainer.world_size), async_op=True)
                return work.get_future().then(lambda fut: fut.value()[0])

            ddp.register_comm_hook(None, counting_hook)

    def training_step(self, batch, batch_idx):
        rank = self.trainer.global_rank
        if rank == self.fail_rank and batch_idx == self.fail_batch and self.current_epoch == 0:
            if self.fail_mode == "raise":
                raise ValueError(f"deliberate failure on rank {rank}")
            if self.fail_mode == "kill":
                os.kill(os.getpid(), 9)
        if getattr(self, "step_sleep", 0):
            import time

            time.sleep(self.step_sleep)
            print(f"rank {rank} step {self.trainer.global_step}", flush=True)
        self.log("rank_sum", float(rank + 1), sync_dist=True, reduce_fx="sum", on_step=True, on_epoch=False)
        self.log("rank_mean", float(rank), sync_dist=True, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-mode", default="")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--ckpt-path", default=None)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--log-every", type=int, default=1)
    args = parser.parse_args()

    from fulmen.strategies.ddp import DDPStrategy

    start_method = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork"}[args.strategy]
    fulmen.seed_everything(0)
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=DDPStrategy(start_method=start_method, timeout=args.timeout),
        devices=args.devices, num_nodes=args.num_nodes, max_epochs=args.epochs,
        accumulate_grad_batches=args.accumulate, default_root_dir=args.out, log_every_n_steps=args.log_every,
        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
        callbacks=[fulmen.callbacks.ModelCheckpoint(save_top_k=-1, save_last=True)],
    )
    model = CountingModule(args.fail_rank, args.fail_mode)
    model.step_sleep = args.step_sleep
    trainer.fit(model, loader(64, batch_size=8), loader(32, batch_size=8), ckpt_path=args.ckpt_path)
    optimizer = trainer.optimizers[0].optimizer
    result = {
        "rank": trainer.global_rank,
        "local_rank": trainer.local_rank,
        "node_rank": trainer.node_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "params": {k: v.flatten().tolist() for k, v in model.state_dict().items()},
        "momentum_free_lr": optimizer.param_groups[0]["lr"],
        "rank_sum": float(trainer.callback_metrics["rank_sum"]),
        "rank_mean": float(trainer.callback_metrics["rank_mean"]),
        "allreduces": model.allreduces,
        "environment": type(trainer.strategy.cluster_environment).__name__,
        "best_model_path": trainer.checkpoint_callback.best_model_path,
    }
    Path(args.out, f"rank_{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
