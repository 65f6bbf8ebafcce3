"""``OnExceptionCheckpoint``: an exception in step N+1 leaves ``on_exception.ckpt`` with N
steps done; fit resumes from it at step N and ends where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fulmen.io import TorchCheckpointIO


class Crashes(BoringModule):
    def __init__(self, crash_at: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.crash_at = crash_at

    def training_step(self, batch, batch_idx):
        if self.trainer.global_step == self.crash_at:
            raise RuntimeError(f"simulated failure after step {self.crash_at}")
        return super().training_step(batch, batch_idx)


class Record(fulmen.Callback):
    def __init__(self):
        self.start = None
        self.batches = []

    def on_train_start(self, trainer):
        self.start = trainer.global_step

    def on_train_batch_start(self, trainer, batch_idx):
        self.batches.append((trainer.current_epoch, batch_idx))


def _fit(root, module, ckpt_path=None, callbacks=()):
    record = Record()
    trainer = quiet_trainer(root, max_epochs=2, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
                            callbacks=[record, *callbacks])
    trainer.fit(module, loader(64, shuffle=True), ckpt_path=ckpt_path)
    return trainer, record


@pytest.mark.parametrize("crash_at", [5, 8])  # mid-epoch; right at the start of epoch 1
def test_exception_leaves_a_checkpoint_that_resumes_at_that_step(tmp_path, crash_at):
    torch.manual_seed(0)
    reference, _ = _fit(tmp_path / "reference", Crashes())

    torch.manual_seed(0)
    on_exception = OnExceptionCheckpoint(dirpath=tmp_path / "exc")
    with pytest.raises(RuntimeError, match=f"after step {crash_at}"):
        _fit(tmp_path / "run", Crashes(crash_at=crash_at), callbacks=[on_exception])
    path = tmp_path / "exc" / "on_exception.ckpt"
    assert on_exception.saved_path == str(path)
    checkpoint = TorchCheckpointIO().load_checkpoint(path)
    assert checkpoint["global_step"] == crash_at

    torch.manual_seed(1)  # a different initialisation: the checkpoint overwrites it
    trainer, record = _fit(tmp_path / "run", Crashes(), ckpt_path=str(path))
    assert record.start == crash_at
    assert record.batches[0] == (crash_at // 8, crash_at % 8)  # the batch that failed, again
    assert trainer.global_step == 16
    # The failed step drew no random numbers, so the resumed run is the uninterrupted one.
    for name, value in reference.module.state_dict().items():
        assert torch.equal(trainer.module.state_dict()[name], value), name
    assert trainer.optimizers[0].optimizer.state_dict() == reference.optimizers[0].optimizer.state_dict()


def test_on_exception_checkpoint_defaults_to_the_log_dir_checkpoints_folder(tmp_path):
    on_exception = OnExceptionCheckpoint()
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=False, callbacks=[on_exception])
    with pytest.raises(RuntimeError):
        trainer.fit(Crashes(crash_at=2), loader(64))
    assert on_exception.saved_path.startswith(trainer.log_dir)
    assert TorchCheckpointIO().load_checkpoint(on_exception.saved_path)["global_step"] == 2
