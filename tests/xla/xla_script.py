"""One training run under torch-xla, as a user would write it; the tests start it in a fresh
process (SPMD and torch_xla.launch both need a process whose runtime has not started) and
read what it writes: ``--out DIR/rank_<r>.json``.

    python xla_script.py --out DIR [--accelerator xla] [--strategy single_xla] [--devices 1]
        [--precision 32-true] [--epochs 2] [--batch-size 8] [--resume PATH|last]
        [--varying-shapes] [--log-every 50] [--root DIR] [--save PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen

HERE = Path(__file__).resolve().parent


def data(n: int = 64, features: int = 8, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x @ torch.randn(features, 1, generator=generator) + 0.01 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


class Regression(fulmen.Module):
    """Two layers with dropout (so the XLA generator's state matters for exact resume),
    AdamW (so optimizer state matters), and a record of what the step saw."""

    def __init__(self, varying_shapes: bool = False, read_every_step: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.seen_dtypes = set()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.varying_shapes:
            x, y = x[: 2 + batch_idx % 5], y[: 2 + batch_idx % 5]  # a new shape every step
        out = self(x)
        self.seen_dtypes.add(str(out.dtype))
        loss = nn.functional.mse_loss(out.float(), y.float())
        self.log("train_loss", loss)
        if self.hparams.read_every_step:
            self.last_loss = loss.item()  # what the loop must not do for the user: a host read
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x).float(), y.float()))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.02)


def blobs(n: int, seed: int) -> TensorDataset:
    """Four Gaussian clusters in 16 dimensions, overlapping enough that accuracy is not 1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(99)) * 1.2
    labels = torch.randint(0, 4, (n,), generator=generator)
    return TensorDataset(centres[labels] + torch.randn(n, 16, generator=generator), labels)


class Classifier(fulmen.Module):
    """A real classification task; keeps every step's loss on the device, read once at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        self.step_losses = []
        self.seen_dtypes = set()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.seen_dtypes.add(str(logits.dtype))
        loss = nn.functional.cross_entropy(logits.float(), y)
        self.step_losses.append(loss.detach())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        accuracy = (self(x).argmax(dim=1) == y).float().mean()
        self.log("val_acc", accuracy)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--accelerator", default="xla")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--varying-shapes", action="store_true")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--root", default=None)
    parser.add_argument("--save", default=None, help="also trainer.save_checkpoint here after fit")
    parser.add_argument("--strategy-kwargs", default="{}")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--read-every-step", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--no-shuffle", action="store_true")
    parser.add_argument("--task", choices=["regression", "classification"], default="regression")
    parser.add_argument("--no-validation", action="store_true")
    args = parser.parse_args()

    fulmen.seed_everything(7)
    if args.task == "classification":
        module = Classifier()
    else:
        module = Regression(varying_shapes=args.varying_shapes, read_every_step=args.read_every_step,
                            dropout=args.dropout)
    strategy = args.strategy
    extra = json.loads(args.strategy_kwargs)
    if extra:
        from fulmen.plugins.manager import build

        strategy = build().registry.create("strategy", strategy, **extra)
    devices = args.devices if args.devices == "auto" else int(args.devices)
    trainer = fulmen.Trainer(
        accelerator=args.accelerator, strategy=strategy, devices=devices, precision=args.precision,
        max_epochs=args.epochs, default_root_dir=args.root or args.out, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=args.log_every, num_sanity_val_steps=0,
        enable_checkpointing=not args.no_checkpointing, callbacks=[TransferCounter(args.out)],
    )
    train_set, val_set = (blobs(512, 0), blobs(256, 1)) if args.task == "classification" else (data(), data(32, seed=1))
    train = DataLoader(train_set, batch_size=args.batch_size, shuffle=not args.no_shuffle)
    val = None if args.no_validation else DataLoader(val_set, batch_size=args.batch_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transfers_before = _transfers()
        trainer.fit(module, train, val, ckpt_path=args.resume)
        transfers = _transfers() - transfers_before
    if args.save:
        trainer.save_checkpoint(args.save)
    strategy = trainer.strategy
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "pid": os.getpid(),
        "trained_in_pids": sorted(int(f.name.split("_")[-1]) for f in Path(args.out).glob("trained_in_*")),
        "strategy": type(strategy).__name__,
        "host_collectives": getattr(strategy, "uses_host_collectives", None),
        "params": {k: v.detach().float().cpu().flatten().tolist() for k, v in module.state_dict().items()},
        "param_device": str(next(module.parameters()).device),
        "param_dtype": str(next(module.parameters()).dtype),
        "seen_dtypes": sorted(module.seen_dtypes),
        "global_step": trainer.global_step,
        "step_losses": torch.stack(module.step_losses).float().cpu().tolist() if getattr(module, "step_losses", None) else [],
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "recompilations": strategy.compile_watch.recompilations if hasattr(strategy, "compile_watch") else None,
        "recompilation_warnings": [str(w.message) for w in caught if type(w.category).__name__ != "" and
                                   w.category.__name__ == "RecompilationWarning"],
        "transfers_during_fit": transfers,
        "transfers_in_steps": trainer.callbacks[0].in_steps if isinstance(trainer.callbacks[0], TransferCounter) else None,
        "sharding": _sharding(module, trainer),
        "best_model_path": str(trainer.checkpoint_callback.best_model_path) if trainer.checkpoint_callback else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank_{trainer.global_rank}.json").write_text(json.dumps(result))


class TransferCounter(fulmen.Callback):
    """Device-to-host reads between a training batch's start and its end: what the loop
    itself costs per step, without the epoch's end (validation, checkpoints); and which
    processes ran the steps."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.in_steps = 0
        self._start = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = _transfers()
        if batch_idx == 0:  # a file, since a launched worker's callback never returns here
            Path(self.out).mkdir(parents=True, exist_ok=True)
            (Path(self.out) / f"trained_in_{os.getpid()}").touch()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.in_steps += _transfers() - self._start


def _transfers() -> int:
    try:
        import torch_xla.debug.metrics as met
    except ImportError:
        return 0
    data = met.metric_data("TransferFromDeviceTime")
    return int(data[0]) if data else 0


def _sharding(module, trainer):
    if next(module.parameters()).device.type != "xla":
        return {}
    import torch_xla

    specs = {name: torch_xla._XLAC._get_xla_sharding_spec(p) for name, p in module.named_parameters()}
    optimizer = trainer.optimizers[0].optimizer if hasattr(trainer.optimizers[0], "optimizer") else trainer.optimizers[0]
    states = {}
    for name, p in module.named_parameters():
        state = optimizer.state.get(p, {})
        if "exp_avg" in state:
            states[name] = torch_xla._XLAC._get_xla_sharding_spec(state["exp_avg"])
    return {"params": specs, "exp_avg": states}


if __name__ == "__main__":
    main()
