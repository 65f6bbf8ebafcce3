"""What a checkpoint holds besides its tensors (hyperparameters, callback states, loop
counters), read without loading the tensors.

The command line (hyperparameters of ``--ckpt_path``) and ``fulmen report`` (ModelCheckpoint's
ranking) both need these small entries before, or instead of, a real restore; reading them must
not cost what loading the checkpoint costs. A file is memory-mapped (its tensors are hashed
for the checksum, never copied into memory); a sharded directory is read through the one small
file that holds everything but the shards, instead of being consolidated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

#: The metadata file of each sharded format fulmen's plugins write: fulmen-strategy-fsdp and
#: fulmen-strategy-deepspeed (``fulmen_checkpoint.pt``), fulmen-accelerator-xla's ``xla_spmd``
#: (``meta.ckpt``). Another plugin's directory can only be read in full, by that plugin (hook
#: ``read_checkpoint_directory``).
DIRECTORY_METADATA_FILES = ("fulmen_checkpoint.pt", "meta.ckpt")


def metadata_file(directory: Path) -> Optional[Path]:
    """The file of a sharded checkpoint directory that holds its small entries, or None for a
    directory in a format fulmen does not know."""
    for name in DIRECTORY_METADATA_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def read_small_entries(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path`` (a file, or a directory with a known metadata file) with its
    tensors memory-mapped; None for a directory of an unknown format. The checksum is verified
    and only plain data is rebuilt (``weights_only``), as for any fulmen load; an unreadable file
    raises ``FulmenCheckpointError`` (``FileNotFoundError`` when it is missing)."""
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    path = Path(path)
    if path.is_dir():
        found = metadata_file(path)
        if found is None:
            return None
        path = found
    return TorchCheckpointIO(mmap=True).load_checkpoint(path, map_location="cpu")
