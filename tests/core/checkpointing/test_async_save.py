"""``plugins=["async"]``: the same files with the same contents as saving in the loop; a
failed background write is reported (at the next save or at the end of fit), never
swallowed, and the last good file is kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.errors import FulmenCheckpointError
from fulmen.io import TorchCheckpointIO
from fulmen.io.async_checkpoint_io import AsyncCheckpointIO


def _fit(root: Path, plugins=None, max_steps: int = 10, **checkpoint_kwargs):
    torch.manual_seed(0)
    checkpoint_kwargs.setdefault("every_n_train_steps", 2)
    checkpoint = ModelCheckpoint(dirpath=root / "ckpts", **checkpoint_kwargs)
    trainer = quiet_trainer(root, max_steps=max_steps, logger=False, num_sanity_val_steps=0, callbacks=[checkpoint], plugins=plugins)
    trainer.fit(BoringModule(), loader(64, shuffle=True), loader(16))
    return trainer, checkpoint


def _normalised(value, root: Path):
    """Paths under ``root`` written as if the run had been in ``/ROOT``."""
    if isinstance(value, dict):
        return {_normalised(k, root): _normalised(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_normalised(v, root) for v in value)
    if isinstance(value, str):
        return value.replace(str(root), "/ROOT")
    return value


def _same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("plugin", ["async", "instance"])
def test_async_save_writes_the_same_files_and_contents_as_sync(tmp_path, plugin):
    settings = dict(save_top_k=-1, save_last=True)
    sync_trainer, _ = _fit(tmp_path / "sync", **settings)
    plugins = ["async"] if plugin == "async" else [AsyncCheckpointIO()]
    async_trainer, _ = _fit(tmp_path / "async", plugins=plugins, **settings)
    assert isinstance(async_trainer.strategy.checkpoint_io, AsyncCheckpointIO)

    sync_files = sorted(p.name for p in (tmp_path / "sync" / "ckpts").iterdir())
    async_files = sorted(p.name for p in (tmp_path / "async" / "ckpts").iterdir())
    assert sync_files == async_files == [f"epoch={(s - 1) // 8}-step={s}.ckpt" for s in (2, 4, 6, 8, 10)] + ["last.ckpt"]
    for name in sync_files:
        expected = _normalised(TorchCheckpointIO().load_checkpoint(tmp_path / "sync" / "ckpts" / name), tmp_path / "sync")
        actual = _normalised(TorchCheckpointIO().load_checkpoint(tmp_path / "async" / "ckpts" / name), tmp_path / "async")
        _same(actual, expected, name)


def test_async_save_snapshot_is_not_changed_by_later_training_steps(tmp_path):
    """The loop goes on while the file is written: what is written is the state at the save."""
    release = threading.Event()

    class HeldIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            release.wait(10)  # the loop trains on meanwhile
            super().save_checkpoint(checkpoint, path, storage_options)

    io = AsyncCheckpointIO(HeldIO())
    weights = torch.nn.Parameter(torch.ones(3))
    io.save_checkpoint({"w": weights}, tmp_path / "a.ckpt")
    with torch.no_grad():
        weights.add_(1.0)
    release.set()
    io.teardown()
    assert torch.equal(TorchCheckpointIO().load_checkpoint(tmp_path / "a.ckpt")["w"], torch.ones(3))


class FailingIO(TorchCheckpointIO):
    """Writes normally until ``fail_from`` writes were made, then fails like a full disk."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.writes = 0

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.writes += 1
        if self.writes >= self.fail_from:
            raise OSError(28, "No space left on device")
        super().save_checkpoint(checkpoint, path, storage_options)


def test_failed_background_write_is_raised_at_the_next_save_and_keeps_the_last_good_file(tmp_path):
    # save_top_k=1: every save deletes the previous file, but not when the new one failed.
    io = FailingIO(fail_from=2)
    with pytest.raises(FulmenCheckpointError, match="background checkpoint write failed: .*No space left") as info:
        _fit(tmp_path, plugins=[AsyncCheckpointIO(io)], max_steps=10)
    assert isinstance(info.value.__cause__, OSError)
    assert io.writes == 2, "the error must surface at the next save, not later"
    files = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert files == ["epoch=0-step=2.ckpt"]
    assert TorchCheckpointIO().load_checkpoint(tmp_path / "ckpts" / files[0])["global_step"] == 2


def test_failed_last_background_write_is_raised_at_the_end_of_fit(tmp_path):
    io = FailingIO(fail_from=2)
    with pytest.raises(FulmenCheckpointError, match="background checkpoint write failed"):
        _fit(tmp_path, plugins=[AsyncCheckpointIO(io)], max_steps=4)  # saves at steps 2 and 4
    assert io.writes == 2
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=2.ckpt"]


def test_sync_write_failure_keeps_the_last_good_file_too(tmp_path):
    io = FailingIO(fail_from=2)
    with pytest.raises(OSError, match="No space left"):
        _fit(tmp_path, plugins=[io], max_steps=10)
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=2.ckpt"]
