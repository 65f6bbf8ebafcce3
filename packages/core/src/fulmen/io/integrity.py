"""A checksum footer on every checkpoint file, so damage is named instead of unpickled.

Layout: ``[torch.save zip bytes][footer]`` with the footer being
``MAGIC (8) | version (1) | sha256 of the payload (32) | payload length (8, little endian)``.
Zip readers find their directory from the end and skip trailing bytes, so ``torch.load``
still reads the file directly; the footer costs 49 bytes and one streaming hash.

The hash runs beside the work it guards rather than after it: while a large block is written
(saving) or while ``torch.load`` reads the file (loading), another thread hashes the same
bytes. Both release the GIL, so on a machine with a spare core the checksum adds little to
the plain ``torch.save``/``torch.load`` time instead of a second pass over the file
(``benchmarks/checkpoint_io.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Optional, TypeVar, Union

from fulmen.errors import FulmenCheckpointError

MAGIC = b"FLMNCKPT"
FOOTER_VERSION = 1
DIGEST_SIZE = 32
FOOTER_SIZE = len(MAGIC) + 1 + DIGEST_SIZE + 8
_CHUNK = 8 << 20
# Below this a hand-off to another thread costs more than the overlap saves.
_OVERLAP_MIN = 1 << 20
T = TypeVar("T")


class HashingWriter:
    """A write-only file object that hashes what passes through it.

    A large block is written by a helper thread while this one hashes it, both on the
    caller's buffer (no copy: ``torch.save`` may reuse the buffer once ``write`` returns,
    so both finish before it does)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.length = 0

    def write(self, data) -> int:
        """Hash ``data`` and pass it on to the real file; returns the bytes written."""
        view = memoryview(data)
        self.length += view.nbytes
        if view.nbytes < _OVERLAP_MIN:
            self._hash.update(view)
            return self._handle.write(view)
        outcome: list = []

        def write_block() -> None:
            try:
                outcome.append(self._handle.write(view))
            except BaseException as exc:  # re-raised in the caller's thread
                outcome.append(exc)

        writer = threading.Thread(target=write_block, name="fulmen-checkpoint-write", daemon=True)
        writer.start()
        self._hash.update(view)
        writer.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def flush(self) -> None:
        """Flush the underlying file."""
        self._handle.flush()

    def footer(self) -> bytes:
        """The footer for everything written so far: magic, version, SHA-256 and length."""
        return MAGIC + bytes([FOOTER_VERSION]) + self._hash.digest() + self.length.to_bytes(8, "little")


def read_footer(path: Union[str, os.PathLike]):
    """``(digest, payload_length)`` or a FulmenCheckpointError saying what is wrong."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise FulmenCheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): a write never finished")
    if size < FOOTER_SIZE:
        raise FulmenCheckpointError(
            f"checkpoint {str(path)!r} is {size} bytes, too short to be a fulmen checkpoint (truncated?)"
        )
    with open(path, "rb") as handle:
        handle.seek(size - FOOTER_SIZE)
        footer = handle.read(FOOTER_SIZE)
    if not footer.startswith(MAGIC):
        raise FulmenCheckpointError(
            f"checkpoint {str(path)!r} has no fulmen integrity footer: it was truncated, or it was not "
            "written by fulmen (a plain torch.save file). If you trust it, load it with "
            "TorchCheckpointIO(verify=False)"
        )
    version = footer[len(MAGIC)]
    if version > FOOTER_VERSION:
        raise FulmenCheckpointError(
            f"checkpoint {str(path)!r} has integrity footer version {version}; upgrade fulmen to read it"
        )
    digest = footer[len(MAGIC) + 1 : len(MAGIC) + 1 + DIGEST_SIZE]
    length = int.from_bytes(footer[-8:], "little")
    if length != size - FOOTER_SIZE:
        raise FulmenCheckpointError(
            f"checkpoint {str(path)!r} should hold {length} bytes of data but holds {size - FOOTER_SIZE}: "
            "it was truncated or appended to"
        )
    return digest, length


def _payload_digest(path: Path, length: int) -> bytes:
    hasher = hashlib.sha256()
    remaining = length
    with open(path, "rb") as handle:
        while remaining:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher.digest()


def _corrupted(path: Path) -> FulmenCheckpointError:
    return FulmenCheckpointError(
        f"checkpoint {str(path)!r} is corrupted: its SHA-256 does not match the one recorded when it "
        "was written (flipped bits on disk or in transfer); use an older checkpoint"
    )


def verify(path: Union[str, os.PathLike]) -> None:
    """Raise FulmenCheckpointError unless the file's payload matches its footer's checksum."""
    path = Path(path)
    digest, length = read_footer(path)
    if _payload_digest(path, length) != digest:
        raise _corrupted(path)


def verified_load(path: Union[str, os.PathLike], load: Callable[[], T]) -> T:
    """``load()`` (which reads ``path``) while another thread checks the file's checksum.

    The footer is read first, so a truncated or footer-less file is refused before anything
    is unpickled. The result is returned only if the checksum matched; when it did not, the
    corruption is what is raised, also when ``load`` failed on the damaged bytes (its own
    error would name a symptom instead of the cause). ``load`` must be safe to run on damaged
    bytes: fulmen's loads are ``weights_only``, which rebuilds no arbitrary objects.
    """
    path = Path(path)
    digest, length = read_footer(path)
    found: list = []

    def check() -> None:
        try:
            found.append(_payload_digest(path, length))
        except BaseException as exc:  # surfaced below, in the caller's thread
            found.append(exc)

    checker = threading.Thread(target=check, name="fulmen-checkpoint-verify", daemon=True)
    checker.start()
    failure: Optional[BaseException] = None
    try:
        result = load()
    except BaseException as exc:
        failure = exc
    checker.join()
    if isinstance(found[0], BaseException):
        raise found[0]
    if found[0] != digest:
        raise _corrupted(path) from None
    if failure is not None:
        raise failure
    return result
