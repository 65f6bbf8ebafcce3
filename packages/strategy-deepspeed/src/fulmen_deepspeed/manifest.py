"""The manifest that makes a DeepSpeed checkpoint directory trustworthy before anything is unpickled.

DeepSpeed's own files carry no checksum, and DeepSpeed unpickles them with
``weights_only=False``. So rank 0 writes ``fulmen_manifest.json`` last through fulmen's
manifest (:mod:`fulmen.io.manifest`: size and SHA-256 of every other file), and
:func:`verify_checkpoint_directory` checks the directory against it, then loads every
``.pt`` file under ``weights_only=True`` with only DeepSpeed's few checkpoint classes
allowed, so a file whose pickle would construct anything else never reaches DeepSpeed.

The probe memory-maps each (zip-format) file and reads only its pickle and zip directory,
not the tensor bytes again. Whoever then loads the files (DeepSpeed, the converter) reads
them a second time; one pass that both hashed and loaded would need the whole file in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Union

from fulmen.io import manifest as _manifest

PathLike = Union[str, os.PathLike]
MANIFEST_FORMAT = "fulmen.deepspeed.manifest"
_KIND, _PACKAGE = "DeepSpeed", "fulmen-strategy-deepspeed"


def write_manifest(directory: PathLike) -> None:
    """Write ``fulmen_manifest.json`` for every file now under ``directory`` (last, on one process)."""
    _manifest.write_manifest(directory, MANIFEST_FORMAT)


def read_manifest(directory: PathLike) -> Dict[str, Any]:
    """The parsed manifest of ``directory``, checked for shape; no file is hashed."""
    return _manifest.read_manifest(directory, MANIFEST_FORMAT, _KIND, _PACKAGE)


def verify_checkpoint_directory(directory: PathLike) -> Dict[str, Any]:
    """Check ``directory`` against its manifest, then probe every ``.pt`` file's pickle;
    returns the manifest. Raises FulmenCheckpointError naming the first offending file."""
    from fulmen_deepspeed import safe_load

    manifest = _manifest.verify_directory(directory, MANIFEST_FORMAT, _KIND, _PACKAGE)
    for relative in sorted(manifest["files"]):
        if relative.endswith(".pt"):
            safe_load.probe(Path(directory) / relative)
    return manifest
