"""``fulmen.DataModule``: the data side of an experiment in one reusable object.

Same methods as Lightning's ``LightningDataModule``: ``prepare_data`` (download; fulmen
calls it in every process, so keep it idempotent), ``setup(stage)`` (build datasets, every
process), ``*_dataloader()`` methods and optional ``state_dict``/``load_state_dict`` saved
in checkpoints.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional

from fulmen.plugins.manager import HookCarrier
from fulmen.utilities.hparams import AttributeDict, collect_init_args, plain_hparams


class DataModule(HookCarrier):
    """The data of an experiment in one object: how to download it, how to split it and the
    dataloaders for each stage, reusable across models (``trainer.fit(model, datamodule=dm)``).

    Define ``train_dataloader()``, ``val_dataloader()``, ``test_dataloader()`` and
    ``predict_dataloader()`` as needed. It may also implement lifecycle hooks, which run after
    the callbacks' and before the module's."""

    def __init__(self) -> None:
        self.trainer = None
        self._hparams = AttributeDict()

    def prepare_data(self) -> None:
        """Download or write data to disk. Called at the start of every stage, before
        :meth:`setup`, in every process: make it idempotent (or guard it yourself) and do not
        assign state here that other processes need."""
        pass

    def setup(self, stage: str) -> None:
        """Build datasets and splits for ``stage`` (``"fit"``, ``"validate"``, ``"test"``,
        ``"predict"``); called in every process at the start of each stage."""
        pass

    def teardown(self, stage: str) -> None:
        """Release what :meth:`setup` built; called in every process after each stage."""
        pass

    @property
    def hparams(self) -> AttributeDict:
        """The hyperparameters :meth:`save_hyperparameters` stored (logged beside the module's)."""
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    def save_hyperparameters(self, *args: Any, ignore: Optional[List[str]] = None) -> None:
        """Store ``__init__``'s arguments (or the named ones, or a dict) in :attr:`hparams`; they
        are logged with the module's and saved in checkpoints."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            values = dict(args[0])
        else:
            caller = inspect.currentframe().f_back
            try:
                values = collect_init_args(caller, [str(a) for a in args], ignore)
            finally:
                del caller
        self.hparams.update(plain_hparams(values, type(self).__name__))

    def state_dict(self) -> Dict[str, Any]:
        """Plain data to keep in full checkpoints (a sampler position of your own); nothing by default."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when fit resumes from a checkpoint."""
        pass


DataModule._fulmen_hook_base = DataModule
# The Trainer calls these itself, with Lightning's keyword ``stage=``.
DataModule._fulmen_direct_methods = frozenset({"setup", "teardown"})
