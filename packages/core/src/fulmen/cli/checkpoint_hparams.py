"""The hyperparameters a ``--ckpt_path`` checkpoint was saved with, read without its weights.

They are one precedence layer of the CLI (above the defaults, below the user's files and
options), needed before anything is built, so reading them must not cost what loading the
checkpoint costs (``fulmen.io.metadata``: a file memory-mapped, a sharded directory through
its small metadata file).
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
    from fulmen.io.metadata import read_small_entries

    found = read_small_entries(path)
    # A directory in another plugin's format: that plugin reads it (in full).
    return found if found is not None else _read_checkpoint(path, "cpu", None)
