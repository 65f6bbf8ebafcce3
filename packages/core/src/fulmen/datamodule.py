"""``fulmen.DataModule``: the data side of an experiment in one reusable object.

Same contract as Lightning's ``LightningDataModule``: ``prepare_data`` (download, once per
node), ``setup(stage)`` (build datasets, every process), ``*_dataloader()`` methods and
optional ``state_dict``/``load_state_dict`` saved in checkpoints.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional

from fulmen.plugins.manager import HookCarrier
from fulmen.utilities.hparams import AttributeDict, collect_init_args, plain_hparams


class DataModule(HookCarrier):
    def __init__(self) -> None:
        self.trainer = None
        self._hparams = AttributeDict()

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str) -> None:
        pass

    def teardown(self, stage: str) -> None:
        pass

    @property
    def hparams(self) -> AttributeDict:
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    def save_hyperparameters(self, *args: Any, ignore: Optional[List[str]] = None) -> None:
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
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


DataModule._fulmen_hook_base = DataModule
# The Trainer calls these itself, with Lightning's keyword ``stage=``.
DataModule._fulmen_direct_methods = frozenset({"setup", "teardown"})
