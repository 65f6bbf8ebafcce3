"""Write-then-rename, so a crash mid-save never destroys the file that was there before."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import uuid
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Union

log = logging.getLogger("fulmen")

# A temporary file nobody has touched for this long is not being written (a save refreshes
# its file's mtime with every block): it belongs to a process that was killed mid-save.
STALE_AFTER_S = 3600.0

PathLike = Union[str, os.PathLike]


def fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms/filesystems cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only if the ``with`` block succeeded."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_directory(target.parent)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through ``write(handle)`` with the guarantees of :func:`atomic_open`."""
    with atomic_open(path) as handle:
        write(handle)


def _host() -> str:
    """Eight hex digits of the host name: short (a long FQDN would push long checkpoint
    names past the file-name limit), and two hosts collide once in four billion pairs."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(name: str) -> str:
    """``.NAME.HOST.PID.``: enough for a later process to tell a dead writer's leftover."""
    return f".{name}.{_host()}.{os.getpid()}."


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: PathLike) -> List[Path]:
    """Delete what saves killed mid-write left in ``directory`` (a SIGKILL skips the cleanup
    in :func:`atomic_open`; repeated preemptions would otherwise fill the disk with partial
    multi-GB files). A file is stale when its writer ran on this host and is gone, or when
    nothing wrote to it for an hour (a writer on another node). Returns what was removed."""
    removed: List[Path] = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    host, now = _host(), time.time()
    for candidate in folder.glob(".*.tmp"):
        parts = candidate.name[1:-len(".tmp")].rsplit(".", 3)  # NAME, HOST, PID, random
        if len(parts) != 4 or not parts[2].isdigit() or len(parts[1]) != 8 or not _is_hex(parts[1]):
            continue  # not one of ours
        try:
            stat = candidate.stat()
            if not candidate.is_file():
                continue
            same_host_dead = parts[1] == host and not _pid_alive(int(parts[2]))
            if same_host_dead or now - stat.st_mtime > STALE_AFTER_S:
                candidate.unlink()
                removed.append(candidate)
                log.info("removed %s (%d bytes), left by a save that did not finish", candidate, stat.st_size)
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError as exc:  # not ours to remove (permissions): leave it, train on
            log.warning("cannot remove %s: %s", candidate, exc)
    return removed


def remove_path(path: PathLike) -> None:
    """Delete a checkpoint directory or file at ``path``; nothing happens when it is gone."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def publish_directory(tmp: PathLike, target: PathLike) -> None:
    """Rename the finished directory ``tmp`` to ``target``, replacing what was there.

    Directory checkpoints (sharded FSDP, DeepSpeed) cannot be renamed over an existing
    directory in one step, so the old one is first renamed aside and deleted only after the
    new one is in place: a crash in between loses nothing that was complete (at worst a
    hidden ``.old`` directory stays behind)."""
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_directory(target.parent)
    if old is not None:
        remove_path(old)
