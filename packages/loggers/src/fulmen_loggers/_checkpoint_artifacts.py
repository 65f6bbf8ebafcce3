"""Checkpoint files on their way to a tracker's artifact store: which ones go (``log_model``),
how each is kept alive until its upload ran, and how a backend finds and releases it.

An upload runs on the delivery thread, possibly minutes after ModelCheckpoint wrote the
file (the backend may be down), and ModelCheckpoint may have pruned the file by then. So
the logger hard-links the file into the run's delivery directory when it is logged (cheap,
no copy) and the ARTIFACT record names both paths; the backend uploads whichever still
exists and removes the link afterwards. The record's data (``path``, ``staged``, ``name``,
``aliases``) is built and read only here.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

STAGING_DIR = "staged"  # below the delivery directory

LOG_MODEL_MODES = {False: "off", None: "off", "off": "off", True: "best", "best": "best", "all": "all"}


def parse_log_model(value: Any) -> str:
    """``log_model=`` as one of ``"off"``, ``"best"``, ``"all"``; raises at construction for
    anything else, rather than uploading nothing at the end of a long run."""
    try:
        return LOG_MODEL_MODES[value]
    except (KeyError, TypeError):
        raise ValueError(
            f"log_model={value!r}; use False (off), True or 'best' (best checkpoint at the end), or 'all'"
        ) from None


class MissingArtifact(Exception):
    """The checkpoint file vanished before it could be uploaded (a permanent failure)."""


def stage_checkpoint(path: str, directory: Path) -> Optional[str]:
    """Hard-link ``path`` into the run directory, so the upload survives ModelCheckpoint
    pruning the file first; None when linking is impossible (another filesystem): then the
    upload reads the original path."""
    target = directory / uuid.uuid4().hex[:12] / os.path.basename(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        return str(target)
    except OSError:
        try:
            target.parent.rmdir()
        except OSError:
            pass
        return None


def checkpoint_record(path: str, aliases: List[str], delivery_dir: Path) -> Dict[str, Any]:
    """Stage ``path`` below ``delivery_dir`` and return the ARTIFACT record's data for it."""
    staged = stage_checkpoint(path, delivery_dir / STAGING_DIR)
    return {"path": path, "staged": staged, "name": os.path.basename(path), "aliases": aliases}


def artifact_source(data: Dict[str, Any]) -> Optional[str]:
    """The file to upload for an ARTIFACT record, or None if neither copy exists any more."""
    for candidate in (data.get("staged"), data.get("path")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def release_staged(data: Dict[str, Any]) -> None:
    """Remove an ARTIFACT record's staged link once the backend holds the upload (the
    original file stays ModelCheckpoint's to keep or prune)."""
    staged = data.get("staged")
    if staged:
        try:
            os.unlink(staged)
            os.rmdir(os.path.dirname(staged))
        except OSError:
            pass
