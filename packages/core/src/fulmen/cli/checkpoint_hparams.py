"""The hyperparameters a ``--ckpt_path`` checkpoint was saved with, read without its weights.

They are one precedence layer of the CLI (above the defaults, below the user's files and
options), needed before anything is built, so reading them must not cost what loading the
checkpoint costs: a file is memory-mapped (its tensors are never read into memory, only
hashed for the checksum), and a sharded checkpoint directory is read through the one small
file that holds everything but the sharded tensors, instead of being consolidated.
A checkpoint that cannot be read is a CLI error naming ``--ckpt_path``: nothing has run yet,
and a traceback from deep inside the loader would not say which option to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from fulmen.cli.strict import NOTHING_RAN, FulmenCLIError
from fulmen.errors import FulmenCheckpointError
from fulmen.module import HPARAMS_KEY, _read_checkpoint

DATA_HPARAMS_KEY = "datamodule_hyper_parameters"

#: The metadata file of each sharded format fulmen's plugins write, which holds the
#: hyperparameters: fulmen-strategy-fsdp and fulmen-strategy-deepspeed (``fulmen_checkpoint.pt``),
#: fulmen-accelerator-xla's ``xla_spmd`` (``meta.ckpt``). Another plugin's directory is read in
#: full by that plugin (hook ``read_checkpoint_directory``).
DIRECTORY_METADATA_FILES = ("fulmen_checkpoint.pt", "meta.ckpt")


def checkpoint_hyperparameters(ckpt_path: str) -> Dict[str, Dict[str, Any]]:
    """``{"model": {...}, "data": {...}}`` as saved in ``ckpt_path`` (a file or a directory);
    an unreadable or missing checkpoint raises ``FulmenCLIError``."""
    try:
        checkpoint = _read_small_entries(Path(ckpt_path))
    except (FulmenCheckpointError, FileNotFoundError) as exc:
        raise FulmenCLIError(
            f"--ckpt_path {ckpt_path}: cannot read the checkpoint's hyperparameters: {exc}. Check "
            f"the path, or pass another checkpoint. {NOTHING_RAN}"
        ) from None
    return {"model": checkpoint.get(HPARAMS_KEY) or {}, "data": checkpoint.get(DATA_HPARAMS_KEY) or {}}


def _read_small_entries(path: Path) -> Dict[str, Any]:
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    reader = TorchCheckpointIO(mmap=True)  # checksum verified, weights_only, tensors mapped
    if not path.is_dir():
        return reader.load_checkpoint(path)
    for name in DIRECTORY_METADATA_FILES:
        if (path / name).is_file():
            return reader.load_checkpoint(path / name)
    return _read_checkpoint(path, "cpu", None)
