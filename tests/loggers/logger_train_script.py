"""Train with fulmen-loggers in a child process that may kill itself (SIGKILL) mid-run, or
resume from a checkpoint; used by the resume tests. Prints one JSON line at the end.

    python logger_train_script.py --root DIR --loggers file,mlflow,wandb,tensorboard,clearml,comet
        [--max-steps 20] [--kill-at 13] [--down-from 8] [--ckpt PATH] [--mlflow-uri URI] [--wait 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/helpers.py

import fulmen  # noqa: E402
from delivery_doubles import FileBackend, FileBackendLogger  # noqa: E402
from helpers import BoringModule, loader  # noqa: E402


class Chaos(fulmen.Callback):
    def __init__(self, backend: FileBackend, down_from: int, kill_at: int, loggers, wait: float = 20.0,
                 wait_open: bool = False) -> None:
        self.backend, self.down_from, self.kill_at, self.loggers = backend, down_from, kill_at, loggers
        self.wait, self.wait_open = wait, wait_open

    def on_train_batch_end(self, trainer) -> None:
        step = trainer.global_step
        if self.down_from and step == self.down_from:
            self.backend.down()
        if self.kill_at and step == self.kill_at:
            # Let what was logged so far reach the backends (or their spools), as a process
            # that runs a while after a checkpoint would; then die without any cleanup.
            if self.wait_open:
                # Die only once every backend run exists (its id is in meta.json): a process killed
                # while the backend is still creating its run leaves nothing for a resume to continue.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not all(
                    any(key != "run_key" for key in logger.identity) for logger in self.loggers
                ):
                    time.sleep(0.05)
            for logger in self.loggers:
                if hasattr(logger, "wait_delivered"):
                    logger.wait_delivered(timeout=2.0 if self.down_from else self.wait)
            time.sleep(1.0)  # W&B's service process writes its file asynchronously
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--loggers", default="file")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--down-from", type=int, default=0)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--mlflow-uri", default=None)
    # Write-ahead loggers (W&B, ClearML, Comet) count as delivered only when their run ends, so
    # waiting before the kill always runs to this limit: a few seconds let the backend write some.
    parser.add_argument("--wait", type=float, default=20.0)
    parser.add_argument("--wait-open", action="store_true")
    args = parser.parse_args()
    root = Path(args.root)
    backend = FileBackend(root / "backend")
    if not args.down_from:
        backend.down(False)
    fast = dict(retry_initial=0.1, retry_max=0.5, flush_interval=0.05, close_timeout=20)
    loggers = []
    for name in args.loggers.split(","):
        if name == "file":
            loggers.append(FileBackendLogger(backend.root, save_dir=root, **fast))
        elif name == "mlflow":
            from fulmen_loggers import MLflowLogger

            loggers.append(MLflowLogger(experiment_name="resume", tracking_uri=args.mlflow_uri, save_dir=root, **fast))
        elif name == "wandb":
            from fulmen_loggers import WandbLogger

            loggers.append(WandbLogger(project="resume", save_dir=root, **fast))
        elif name == "tensorboard":
            from fulmen_loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=root, **fast))
        elif name == "clearml":
            from fulmen_loggers import ClearMLLogger

            loggers.append(ClearMLLogger(project_name="resume", offline=True, save_dir=root, **fast))
        elif name == "comet":
            from fulmen_loggers import CometLogger

            loggers.append(CometLogger(project="resume", online=False, save_dir=root, **fast))
    checkpoint = fulmen.callbacks.ModelCheckpoint(
        dirpath=root / "ckpts", every_n_train_steps=5, save_top_k=-1, save_last=True
    )
    trainer = fulmen.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=loggers,
        max_steps=args.max_steps,
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint, Chaos(backend, args.down_from, args.kill_at, loggers, args.wait, args.wait_open)],
    )
    fulmen.seed_everything(0)
    trainer.fit(BoringModule(), loader(), loader(), ckpt_path=args.ckpt)
    print(
        json.dumps(
            {
                "global_step": trainer.global_step,
                "loggers": [
                    {
                        "type": type(lg).__name__,
                        "version": lg.version,
                        "log_dir": lg.log_dir,
                        "identity": lg.identity,
                        "remaining": lg.remaining,
                    }
                    for lg in loggers
                ],
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
