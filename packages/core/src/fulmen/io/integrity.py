"""A checksum footer on every checkpoint file, so damage is named instead of unpickled.

Layout: ``[torch.save zip bytes][footer]`` with the footer being
``MAGIC (8) | version (1) | sha256 of the payload (32) | payload length (8, little endian)``.
Zip readers find their directory from the end and skip trailing bytes, so ``torch.load``
still reads the file directly; the footer costs 49 bytes and one streaming hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Union

from fulmen.errors import FulmenCheckpointError

MAGIC = b"FLMNCKPT"
FOOTER_VERSION = 1
DIGEST_SIZE = 32
FOOTER_SIZE = len(MAGIC) + 1 + DIGEST_SIZE + 8
_CHUNK = 8 << 20


class HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.length = 0

    def write(self, data) -> int:
        """Hash ``data`` and pass it on to the real file; returns the bytes written."""
        view = memoryview(data)
        self._hash.update(view)
        self.length += view.nbytes
        return self._handle.write(view)

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


def verify(path: Union[str, os.PathLike]) -> None:
    """Raise FulmenCheckpointError unless the file's payload matches its footer's checksum."""
    digest, length = read_footer(path)
    hasher = hashlib.sha256()
    remaining = length
    with open(path, "rb") as handle:
        while remaining:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    if hasher.digest() != digest:
        raise FulmenCheckpointError(
            f"checkpoint {str(path)!r} is corrupted: its SHA-256 does not match the one recorded when it "
            "was written (flipped bits on disk or in transfer); use an older checkpoint"
        )
