"""Two gloo ranks train the Classifier of torchmetrics_helpers, each on its half of the
data (the DistributedSampler the Trainer adds); each rank writes ``<out>/rank_<r>.json``
with the epoch values it saw and the predictions its metric was updated with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # torchmetrics_helpers, tests/helpers

import fulmen  # noqa: E402
from fulmen.callbacks.model_checkpoint import ModelCheckpoint  # noqa: E402
from fulmen.strategies.ddp import DDPStrategy  # noqa: E402
from torchmetrics_helpers import Classifier, EpochValues, classification_loader  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt-path", default=None)
    args = parser.parse_args()
    epochs = EpochValues("train_acc_epoch")
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=DDPStrategy(start_method="popen", timeout=60), devices=2, max_epochs=2,
        default_root_dir=args.out, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[epochs, ModelCheckpoint(dirpath=Path(args.out) / "ckpts", every_n_train_steps=4, save_top_k=-1)],
    )
    model = Classifier()
    trainer.fit(model, classification_loader(96, batch_size=8), ckpt_path=args.ckpt_path)
    seen = {
        str(epoch): [[p.tolist(), t.tolist()] for p, t in pairs] for epoch, pairs in model.seen["train"].items()
    }
    result = {"rank": trainer.global_rank, "epoch_values": epochs.values, "seen": seen}
    Path(args.out, f"rank_{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
