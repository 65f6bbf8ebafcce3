"""Damaged, foreign and malicious files given to ``fit``/``validate``/``load_from_checkpoint``:
refused with a FulmenCheckpointError that names the file and what is wrong, never unpickled;
``ckpt_path="last"`` steps over a damaged newest file to the newest good one."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks.model_checkpoint import ModelCheckpoint
from fulmen.errors import FulmenCheckpointError, FulmenWarning
from fulmen.io import TorchCheckpointIO
from fulmen.io.integrity import HashingWriter


class StartedAt(fulmen.Callback):
    def __init__(self):
        self.step = None

    def on_train_start(self, trainer):
        self.step = trainer.global_step


def _fit(root: Path, max_steps: int, ckpt_path=None):
    """8 batches an epoch, a checkpoint every 2 steps (all kept) under ``root/ckpts``."""
    started = StartedAt()
    checkpoint = ModelCheckpoint(dirpath=root / "ckpts", every_n_train_steps=2, save_top_k=-1)
    trainer = quiet_trainer(root, max_steps=max_steps, logger=False, num_sanity_val_steps=0, callbacks=[started, checkpoint])
    trainer.fit(BoringModule(), loader(64, shuffle=True), ckpt_path=ckpt_path)
    return trainer, started


@pytest.fixture
def trained(tmp_path):
    """Checkpoints at steps 2, 4 and 6."""
    torch.manual_seed(0)
    _fit(tmp_path, max_steps=6)
    files = {step: tmp_path / "ckpts" / f"epoch=0-step={step}.ckpt" for step in (2, 4, 6)}
    assert all(path.exists() for path in files.values())
    return files


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor data: only the checksum notices
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _plain_torch_save(path: Path) -> None:
    torch.save({"state_dict": BoringModule().state_dict()}, path)


def _text(path: Path) -> None:
    path.write_text("epoch: 3\nthis is a text file with a .ckpt name\n")


DAMAGE = {
    "truncated": (_truncate, "no fulmen integrity footer"),
    "flipped byte": (_flip_byte, "corrupted: its SHA-256 does not match"),
    "empty": (_empty, "is empty"),
    "plain torch.save": (_plain_torch_save, "no fulmen integrity footer"),
    "text file": (_text, "no fulmen integrity footer|too short"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_fit_refuses_a_damaged_or_foreign_file_naming_it(tmp_path, trained, kind):
    damage, expected = DAMAGE[kind]
    path = trained[4]
    damage(path)
    with pytest.raises(FulmenCheckpointError, match=expected) as info:
        _fit(tmp_path / "again", max_steps=8, ckpt_path=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "Traceback" not in message and "_pickle" not in message


def test_a_checksummed_file_that_is_not_a_trainer_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.ckpt"
    TorchCheckpointIO().save_checkpoint({"w": torch.ones(3)}, path)  # intact, but only weights
    with pytest.raises(FulmenCheckpointError, match="not a fulmen Trainer checkpoint") as info:
        _fit(tmp_path, max_steps=2, ckpt_path=str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["truncated", "flipped byte", "empty"])
def test_resume_from_last_skips_a_damaged_newest_file_with_a_warning(tmp_path, trained, kind):
    DAMAGE[kind][0](trained[6])
    with pytest.warns(FulmenWarning, match=r"skipping damaged checkpoint .*step=6\.ckpt") as record:
        trainer, started = _fit(tmp_path, max_steps=8, ckpt_path="last")
    assert started.step == 4  # the newest good file
    assert trainer.global_step == 8
    assert len([w for w in record if "skipping damaged" in str(w.message)]) == 1


def test_resume_from_last_with_the_two_newest_damaged_uses_the_third(tmp_path, trained):
    _truncate(trained[6])
    _flip_byte(trained[4])
    with pytest.warns(FulmenWarning, match="skipping damaged checkpoint") as record:
        _, started = _fit(tmp_path, max_steps=8, ckpt_path="last")
    assert started.step == 2
    assert len([w for w in record if "skipping damaged" in str(w.message)]) == 2


def test_resume_from_last_when_every_file_is_damaged_raises_instead_of_starting_over(tmp_path, trained):
    for path in trained.values():
        _truncate(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FulmenWarning)
        with pytest.raises(FulmenCheckpointError) as info:
            _fit(tmp_path, max_steps=8, ckpt_path="last")
    assert str(trained[2]) in str(info.value)  # the last one tried, the oldest


def test_random_truncations_and_bit_flips_of_a_trainer_checkpoint_are_all_refused(tmp_path, trained):
    data = trained[4].read_bytes()
    rng = random.Random(3)
    path = tmp_path / "damaged.ckpt"
    for _ in range(12):
        content = bytearray(data)
        if rng.random() < 0.5:
            content = content[: rng.randrange(len(content))]
        else:
            content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(content))
        with pytest.raises(FulmenCheckpointError) as info:
            TorchCheckpointIO().load_checkpoint(path)
        assert str(path) in str(info.value)


# ---------------------------------------------------------------------------- unsafe files
class _CreatesMarker:
    """Unpickling this object would create ``path`` (``open(path, "w")``): code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_checkpoint(path: Path, source: Path, marker: Path) -> None:
    """A real Trainer checkpoint plus a smuggled object, with a *valid* integrity footer:
    the checksum guards against damage, not against forgery."""
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["payload"] = _CreatesMarker(str(marker))
    with open(path, "wb") as handle:
        writer = HashingWriter(handle)
        torch.save(checkpoint, writer)
        handle.write(writer.footer())


@pytest.fixture
def evil(tmp_path, trained):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _evil_checkpoint(path, trained[4], marker)
    assert not marker.exists()
    yield path, marker
    assert not marker.exists(), "loading the checkpoint ran code from it"


def _assert_refused(info, path):
    message = str(info.value)
    assert "refusing to load" in message and str(path) in message
    assert "weights_only" in message and "safe_globals" in message  # says how to opt in


def test_fit_refuses_a_checkpoint_that_would_run_code(tmp_path, evil):
    path, marker = evil
    with pytest.raises(FulmenCheckpointError) as info:
        _fit(tmp_path / "again", max_steps=8, ckpt_path=str(path))
    _assert_refused(info, path)


def test_validate_refuses_a_checkpoint_that_would_run_code(tmp_path, evil):
    path, marker = evil
    trainer = quiet_trainer(tmp_path, logger=False)
    with pytest.raises(FulmenCheckpointError) as info:
        trainer.validate(BoringModule(), loader(16), ckpt_path=str(path))
    _assert_refused(info, path)


def test_load_from_checkpoint_refuses_a_checkpoint_that_would_run_code(evil):
    path, marker = evil
    with pytest.raises(FulmenCheckpointError) as info:
        BoringModule.load_from_checkpoint(path)
    _assert_refused(info, path)


def test_resume_from_last_never_runs_a_malicious_newest_file(tmp_path, trained):
    marker = tmp_path / "pwned"
    _evil_checkpoint(trained[6], trained[6], marker)
    with pytest.warns(FulmenWarning, match="skipping damaged checkpoint .*refusing to load"):
        _, started = _fit(tmp_path, max_steps=8, ckpt_path="last")
    assert started.step == 4
    assert not marker.exists()


def test_the_payload_is_real(tmp_path, trained):
    """Control for the tests above: an unsafe load of the same file does run the code."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _evil_checkpoint(path, trained[4], marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
