"""Resuming from *any* checkpoint a run wrote ends where the run ended, bit for bit.

A file written in the middle of the loop (on_train_batch_end, the end of a validation, the
end of an epoch) is the state of a process that could have been killed right after writing
it. The run first finishes what it still had to do at that point: the batch's log row,
epoch-interval schedulers, a validation that was due (and EarlyStopping's check in it), the
epoch end with ReduceLROnPlateau. In-process, so every checkpoint of a run can be tried.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks.early_stopping import EarlyStopping
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.io import TorchCheckpointIO


class Net(fulmen.Module):
    def __init__(self, monitor: str = "val_loss") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x + 0.1 * torch.randn_like(x)), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8)  # interval "epoch"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.5)
        return [opt], [step_lr, {"scheduler": plateau, "monitor": self.hparams.monitor}]


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).sin())


CONFIGS = {
    # validation twice an epoch (batch 3 and 6 of 6): checkpoints at every batch end and in
    # every validation; EarlyStopping and ReduceLROnPlateau watch val_loss
    "validation": dict(val=True, monitor="val_loss", trainer=dict(val_check_interval=3)),
    # no validation: the epoch-end checkpoint is written in on_train_epoch_end, before the
    # epoch's log row and the plateau step
    "no_validation": dict(val=False, monitor="train_loss", trainer=dict()),
}


def _fit(root: Path, config: dict, ckpt_path=None, save: bool = False):
    torch.manual_seed(0)
    callbacks = [EarlyStopping(monitor=config["monitor"], patience=2, min_delta=0.05)]
    if save:
        callbacks += [
            ModelCheckpoint(dirpath=root / "steps", filename="step-{step}", every_n_train_steps=1, save_top_k=-1),
            ModelCheckpoint(dirpath=root / "epochs", filename="end-{step}", monitor=config["monitor"], save_top_k=-1),
        ]
    trainer = fulmen.Trainer(
        accelerator="cpu", max_epochs=5, deterministic=True, default_root_dir=root, logger=False,
        enable_checkpointing=save, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=callbacks, **config["trainer"],
    )
    val = DataLoader(_data(16, 1), batch_size=8) if config["val"] else None
    trainer.fit(Net(config["monitor"]), DataLoader(_data(48, 0), batch_size=8, shuffle=True), val, ckpt_path=ckpt_path)
    return trainer


def _state(trainer):
    return {
        "model": trainer.module.state_dict(),
        "optimizer": trainer.optimizers[0].optimizer.state_dict(),
        "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        "global_step": trainer.global_step,
        "current_epoch": trainer.current_epoch,
        "es": trainer.early_stopping_callback.state_dict(),
    }


def _assert_equal(actual, expected, where):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            _assert_equal(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_equal(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resuming_from_any_checkpoint_ends_bitwise_identical(tmp_path, name):
    config = CONFIGS[name]
    reference = _fit(tmp_path / "reference", config, save=True)
    expected = _state(reference)
    assert expected["es"]["wait_count"] >= 1  # the checks it continues matter
    files = sorted((tmp_path / "reference").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    # Where in the loop the files were written: every batch end, and every validation end
    # (with validation) or every epoch end (without).
    written = {(loops["phase"], loops["validating"]) for loops in (TorchCheckpointIO().load_checkpoint(p)["loops"]["fit"] for p in files)}
    other = ("batch_end", True) if name == "validation" else ("epoch_end", False)
    assert {("batch_end", False), other} <= written
    assert len(files) >= 20
    for path in files:
        resumed = _fit(tmp_path / "resumed" / path.stem, config, ckpt_path=str(path))
        _assert_equal(_state(resumed), expected, f"resumed from {path.relative_to(tmp_path)}")
