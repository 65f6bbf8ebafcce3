"""TorchCheckpointIO and the atomic writer: durable saves, data-only loads, clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from fulmen.errors import FulmenCheckpointError
from fulmen.io import TorchCheckpointIO
from fulmen.io.atomic import atomic_open, atomic_write


def _leftovers(directory: Path, keep: str):
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_content(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    atomic_write(target, lambda handle: handle.write(b"new content"))
    assert target.read_bytes() == b"new content"
    assert _leftovers(tmp_path, "file.bin") == []


def test_atomic_write_keeps_old_file_when_writer_raises_mid_write(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"the good old checkpoint")

    def writer(handle):
        handle.write(b"half of a new chec")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, writer)
    assert target.read_bytes() == b"the good old checkpoint"
    assert _leftovers(tmp_path, "file.bin") == [], "the temporary file must be removed"


def test_atomic_open_interrupted_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as handle:
            handle.write(b"partial")
            raise KeyboardInterrupt
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_torch_checkpoint_io_save_failure_keeps_previous_checkpoint(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"w": torch.zeros(3), "bad": Unpicklable()}, path)
    assert torch.equal(io.load_checkpoint(path)["w"], torch.ones(3))
    assert _leftovers(tmp_path, "model.ckpt") == []


# ---------------------------------------------------------------------------- loading
def test_round_trip_and_plain_torch_load(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "c.ckpt"
    state = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 4, "name": "x", "nested": [1, (2, 3.5)]}
    io.save_checkpoint(state, path)
    for loaded in (io.load_checkpoint(path), torch.load(path, weights_only=True)):
        assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
        assert loaded["epoch"] == 4 and loaded["name"] == "x" and loaded["nested"] == [1, (2, 3.5)]


def test_storage_options_are_refused(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        TorchCheckpointIO().save_checkpoint({}, tmp_path / "c.ckpt", storage_options={"a": 1})


class _CreatesMarker:
    """Unpickling this object would create ``path`` (``open(path, "w")``): code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _save_with_valid_footer(obj, path):
    """What an attacker can do: the checksum guards against damage, not against forgery."""
    from fulmen.io.integrity import HashingWriter

    with open(path, "wb") as handle:
        writer = HashingWriter(handle)
        torch.save(obj, writer)
        handle.write(writer.footer())


@pytest.mark.parametrize("verify", [True, False])
def test_pickled_object_is_refused_and_never_runs(tmp_path, verify):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _save_with_valid_footer({"state_dict": {}, "payload": _CreatesMarker(str(marker))}, path)
    assert not marker.exists()

    with pytest.raises(FulmenCheckpointError, match="refusing to load") as info:
        TorchCheckpointIO(verify=verify).load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "weights_only" in str(info.value) and "safe_globals" in str(info.value)
    assert not marker.exists()

    # Control: the payload is real, an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


class TrustedConfig:
    def __init__(self, depth=3):
        self.depth = depth


def test_safe_globals_is_the_explicit_opt_in_for_trusted_classes(tmp_path):
    path = tmp_path / "custom.ckpt"
    TorchCheckpointIO().save_checkpoint({"config": TrustedConfig(5)}, path)
    with pytest.raises(FulmenCheckpointError, match="TrustedConfig"):
        TorchCheckpointIO().load_checkpoint(path)
    loaded = TorchCheckpointIO(safe_globals=[TrustedConfig]).load_checkpoint(path)
    assert isinstance(loaded["config"], TrustedConfig) and loaded["config"].depth == 5


def test_plain_torch_save_file_needs_verify_false(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(FulmenCheckpointError, match="no fulmen integrity footer") as info:
        TorchCheckpointIO().load_checkpoint(path)
    assert "verify=False" in str(info.value)
    assert torch.equal(TorchCheckpointIO(verify=False).load_checkpoint(path)["w"], torch.ones(2))


def test_module_load_from_checkpoint_refuses_pickled_object(tmp_path):
    from helpers import BoringModule

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    _save_with_valid_footer({"state_dict": BoringModule().state_dict(), "hyper_parameters": {}, "x": _CreatesMarker(str(marker))}, path)
    with pytest.raises(FulmenCheckpointError):
        BoringModule.load_from_checkpoint(path)
    assert not marker.exists()


def _valid_bytes(tmp_path) -> bytes:
    path = tmp_path / "valid.ckpt"
    TorchCheckpointIO().save_checkpoint({"state_dict": {"w": torch.randn(40, 40)}, "epoch": 1}, path)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "random", "empty", "zip_header_only"])
def test_unreadable_files_raise_checkpoint_error_naming_the_file(tmp_path, kind):
    data = _valid_bytes(tmp_path)
    content = {
        "truncated": data[: len(data) // 2],
        "garbage": b"this is not a checkpoint at all\n" * 20,
        "random": random.Random(0).randbytes(4096),
        "empty": b"",
        "zip_header_only": b"PK\x03\x04" + b"\x00" * 64,
    }[kind]
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(content)
    with pytest.raises(FulmenCheckpointError) as info:
        TorchCheckpointIO().load_checkpoint(path)
    assert str(path) in str(info.value)
    expected = {"empty": "is empty", "truncated": "no fulmen integrity footer"}.get(kind, "too short|no fulmen integrity footer")
    assert __import__("re").search(expected, str(info.value))
    # Without the footer check the torch reader still refuses with a clear message.
    with pytest.raises(FulmenCheckpointError, match="cannot read checkpoint"):
        TorchCheckpointIO(verify=False).load_checkpoint(path)


def test_every_truncation_and_byte_flip_gives_checkpoint_error(tmp_path):
    data = _valid_bytes(tmp_path)
    rng = random.Random(1)
    cases = [data[:n] for n in range(0, len(data), max(1, len(data) // 40))]
    for _ in range(60):
        corrupted = bytearray(data)
        corrupted[rng.randrange(len(corrupted))] ^= 1 << rng.randrange(8)  # one flipped bit
        cases.append(bytes(corrupted))
    path = tmp_path / "bad.ckpt"
    io = TorchCheckpointIO()
    for content in cases:
        path.write_bytes(content)
        # The checksum catches every one, including flips inside tensor bytes.
        with pytest.raises(FulmenCheckpointError) as info:
            io.load_checkpoint(path)
        assert str(path) in str(info.value)


def test_directory_gives_sharded_checkpoint_message(tmp_path):
    shard_dir = tmp_path / "sharded.ckpt"
    shard_dir.mkdir()
    (shard_dir / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(FulmenCheckpointError, match="sharded checkpoint") as info:
        TorchCheckpointIO().load_checkpoint(shard_dir)
    assert str(shard_dir) in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TorchCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


def test_remove_checkpoint(tmp_path):
    io = TorchCheckpointIO()
    path = tmp_path / "c.ckpt"
    io.save_checkpoint({"a": 1}, path)
    io.remove_checkpoint(path)
    assert not path.exists()
    io.remove_checkpoint(path)  # already gone: no error


def test_large_blocks_hashed_beside_the_write_round_trip_and_catch_a_flip(tmp_path):
    """Tensors of several MiB take the path where one thread writes a block while another hashes
    it: the file must still carry the hash of exactly what was written."""
    import hashlib

    from fulmen.io import integrity

    state = {"big": torch.arange(3 << 20, dtype=torch.float32), "small": torch.ones(3)}
    path = tmp_path / "big.ckpt"
    TorchCheckpointIO().save_checkpoint(state, path)
    data = path.read_bytes()
    payload, footer = data[: -integrity.FOOTER_SIZE], data[-integrity.FOOTER_SIZE:]
    assert footer[len(integrity.MAGIC) + 1: len(integrity.MAGIC) + 1 + integrity.DIGEST_SIZE] == hashlib.sha256(payload).digest()
    loaded = TorchCheckpointIO().load_checkpoint(path)
    assert torch.equal(loaded["big"], state["big"]) and torch.equal(loaded["small"], state["small"])
    flipped = bytearray(data)
    flipped[len(payload) // 2] ^= 0x10  # inside the big tensor's bytes: torch.load alone would not notice
    path.write_bytes(bytes(flipped))
    with pytest.raises(FulmenCheckpointError, match="corrupted"):
        TorchCheckpointIO().load_checkpoint(path)


def test_a_failing_large_write_raises_in_the_caller_and_keeps_the_previous_file(tmp_path):
    from fulmen.io.integrity import HashingWriter

    class FullDisk:
        def write(self, data):
            if memoryview(data).nbytes >= 1 << 20:
                raise OSError(28, "No space left on device")
            return memoryview(data).nbytes

    with pytest.raises(OSError, match="No space left"):
        HashingWriter(FullDisk()).write(bytes(2 << 20))
    path = tmp_path / "last.ckpt"
    TorchCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def failing(handle):
        HashingWriter(FullDisk()).write(bytes(2 << 20))

    with pytest.raises(OSError):
        atomic_write(path, failing)
    assert path.read_bytes() == before
