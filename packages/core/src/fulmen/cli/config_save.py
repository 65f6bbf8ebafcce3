"""``SaveConfigCallback``: the resolved config, written once per run into its log directory.

Written by global rank 0 only, into the directory the run logs to, so a 2-process DDP run
leaves one file (Hydra's one-directory-per-rank is what users complain about, hydra#2070).
The file holds every value after precedence, the seed actually used included, so
``fulmen fit --config <that file>`` runs the same thing again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fulmen.callbacks.base import Callback
from fulmen.errors import FulmenConfigError


class SaveConfigCallback(Callback):
    """Lightning's ``SaveConfigCallback``: at ``setup``, global rank 0 writes ``config`` (as
    ``parser`` dumps it) to ``<trainer.log_dir>/<config_filename>``.

    Args:
        parser: the jsonargparse parser that produced ``config``.
        config: the parsed (not instantiated) config of the subcommand that runs.
        config_filename: the file name inside the log directory.
        overwrite: replace a file already there; by default that is an error, because it
            means two runs share one log directory and one of them would lose its record.
        multifile: accepted for Lightning's signature; fulmen always writes one file.
        save_to_log_dir: ``False`` writes nothing (override :meth:`save_config` to send the
            config elsewhere, e.g. to a logger).
    """

    def __init__(self, parser: Any, config: Any, config_filename: str = "config.yaml",
                 overwrite: bool = False, multifile: bool = False, save_to_log_dir: bool = True) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False
        self.path: Path | None = None

    def setup(self, trainer, module, stage) -> None:
        if self.already_saved:  # fit then test in one script: the first stage's record stays
            return
        if self.save_to_log_dir:
            path = Path(trainer.log_dir) / self.config_filename
            # Rank 0 decides and every rank hears it: a rank that raised alone would leave
            # the others waiting in the next collective (on NCCL, possibly for good).
            if not self.overwrite and trainer.strategy.broadcast(trainer.is_global_zero and path.exists(), src=0):
                raise FulmenConfigError(
                    f"{path} exists: another run already logged to this directory. Give this run "
                    "its own directory (--trainer.default_root_dir, or a logger version), or pass "
                    "save_config_kwargs={'overwrite': True} to replace the file"
                )
            if trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self.parser.dump(self.config, skip_none=False))
                self.path = path
        self.save_config(trainer, module, stage)
        self.already_saved = True

    def save_config(self, trainer, module, stage) -> None:
        """Lightning's extension point: called on every rank after the file was written;
        does nothing by default."""
