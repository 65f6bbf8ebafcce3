"""A manifest that makes a checkpoint directory trustworthy before any of it is read.

Backends that write a directory of files (DeepSpeed's engine, distributed checkpoint under
XLA SPMD) write formats fulmen does not control, and some of those are unpickled on load
(DeepSpeed's ``.pt`` files, DCP's ``.metadata``). So one process writes
``fulmen_manifest.json`` last, after every rank's files exist, holding the size and SHA-256
of every other file; its presence says the save finished. :func:`verify_directory`
refuses, naming the file, a directory that differs from it in any way (a missing,
truncated, flipped, unlisted or linked file). A backend adds its own checks after it (the
DeepSpeed package probes each pickle).

Cost: every byte is read once, for the hash, in 8 MiB chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Union

from fulmen.errors import FulmenCheckpointError
from fulmen.io.atomic import atomic_write

MANIFEST_NAME = "fulmen_manifest.json"

PathLike = Union[str, os.PathLike]
MANIFEST_VERSION = 1
_CHUNK = 8 << 20

_USE_ANOTHER = "use another checkpoint (an earlier one, or a fresh copy from where it was saved)"


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
    return hasher.hexdigest()


def _walk(directory: Path):
    """``(relative POSIX path, Path)`` of every file below ``directory`` but the manifest,
    sorted; a symlink or anything that is not a regular file or directory is refused."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise FulmenCheckpointError(
                    f"{str(path)!r} in checkpoint {str(directory)!r} is a symbolic link; a checkpoint holds its "
                    "own files only (a link can point anywhere). Replace it by the file it points to, or "
                    f"{_USE_ANOTHER}"
                )
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise FulmenCheckpointError(
                    f"{str(path)!r} in checkpoint {str(directory)!r} is not a regular file; remove it, or {_USE_ANOTHER}"
                )
            if relative != MANIFEST_NAME:
                found.append((relative, path))
    return sorted(found)


def write_manifest(directory: PathLike, fmt: str) -> None:
    """Write ``fulmen_manifest.json`` (atomically) for every regular file now under ``directory``,
    tagged with the backend's format name ``fmt``. Call it last, on one process, after every
    rank's files are complete."""
    directory = Path(directory)
    files = {relative: {"size": path.stat().st_size, "sha256": _sha256(path)} for relative, path in _walk(directory)}
    manifest = {"format": fmt, "version": MANIFEST_VERSION, "algorithm": "sha256", "files": files}
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    atomic_write(directory / MANIFEST_NAME, lambda handle: handle.write(data))


def manifest_format(directory: PathLike) -> Optional[str]:
    """The format name in ``directory``'s manifest; ``""`` when the manifest exists but cannot
    be read (damaged: the backend that claims the directory reports it), None when there is
    none. Lets each backend recognise its own directories without hashing anything."""
    path = Path(directory) / MANIFEST_NAME
    if not (path.is_file() or path.is_symlink()):
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def read_manifest(directory: PathLike, fmt: str, kind: str, package: str) -> Dict[str, Any]:
    """The parsed manifest of ``directory``, checked for shape; no file is hashed."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if path.is_symlink():
        raise FulmenCheckpointError(f"{str(path)!r} is a symbolic link; {_USE_ANOTHER}")
    if not path.is_file():
        raise FulmenCheckpointError(
            f"checkpoint {str(directory)!r} has no {MANIFEST_NAME}: its save did not finish (the manifest is "
            f"written last), or it is not a fulmen {kind} checkpoint. Nothing in it is loaded; {_USE_ANOTHER}"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FulmenCheckpointError(f"{str(path)!r} is not valid JSON ({exc}); it is damaged, {_USE_ANOTHER}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise FulmenCheckpointError(f"{str(path)!r} is not a {fmt} file; {_USE_ANOTHER}")
    if int(manifest.get("version", 0)) > MANIFEST_VERSION:
        raise FulmenCheckpointError(
            f"{str(path)!r} is manifest version {manifest['version']}; upgrade {package} to read it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(_well_formed(name, entry) for name, entry in files.items()):
        raise FulmenCheckpointError(f"{str(path)!r} lists files in a form fulmen does not write; {_USE_ANOTHER}")
    return manifest


def _well_formed(name: Any, entry: Any) -> bool:
    """A relative, normalised path inside the directory with an integer size and a hex digest."""
    if not isinstance(name, str) or not isinstance(entry, dict):
        return False
    pure = PurePosixPath(name)
    inside = bool(name) and not pure.is_absolute() and ".." not in pure.parts and pure.as_posix() == name
    digest = entry.get("sha256")
    return (inside and "\\" not in name and isinstance(entry.get("size"), int)
            and isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))


def verify_directory(directory: PathLike, fmt: str, kind: str, package: str) -> Dict[str, Any]:
    """Check ``directory`` against its manifest (format ``fmt``, written by ``package``'s
    ``kind`` backend); returns the manifest. Raises FulmenCheckpointError naming the first
    offending file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FulmenCheckpointError(f"checkpoint {str(directory)!r} is not a directory")
    manifest = read_manifest(directory, fmt, kind, package)
    listed: Dict[str, Dict[str, Any]] = manifest["files"]
    present = dict(_walk(directory))
    for relative in sorted(set(present) - set(listed)):
        raise FulmenCheckpointError(
            f"{str(present[relative])!r} is not listed in the manifest of checkpoint {str(directory)!r}: it was "
            "added after the save (it might be loaded with the rest), so the checkpoint is refused. Remove "
            f"the file if you know where it came from, or {_USE_ANOTHER}"
        )
    for relative in sorted(listed):
        if relative not in present:
            raise FulmenCheckpointError(
                f"{str(directory / relative)!r} is missing from checkpoint {str(directory)!r} (its manifest lists "
                f"it); the checkpoint is incomplete, {_USE_ANOTHER}"
            )
    for relative, entry in sorted(listed.items()):
        path = present[relative]
        size = path.stat().st_size
        if size != entry["size"]:
            how = "truncated" if size < entry["size"] else "appended to"
            raise FulmenCheckpointError(
                f"{str(path)!r} is {size} bytes but was saved with {entry['size']}: it was {how} after the save; "
                f"{_USE_ANOTHER}"
            )
        if _sha256(path) != entry["sha256"]:
            raise FulmenCheckpointError(
                f"{str(path)!r} is corrupted: its SHA-256 differs from the one recorded when it was saved "
                f"(flipped bits on disk or in transfer, or a modified file); {_USE_ANOTHER}"
            )
    return manifest
