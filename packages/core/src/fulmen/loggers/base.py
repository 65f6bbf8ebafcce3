"""The logger contract: what the Trainer hands an experiment tracker, and when.

``log_metrics`` receives floats at logging intervals only (never per step tensors), on
global rank zero only. ``save`` is called at epoch ends; ``finalize`` once at the end with
``"success"``, ``"failed"`` or ``"interrupted"``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class Logger:
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def version(self) -> Any:
        return None

    @property
    def log_dir(self) -> Optional[str]:
        return None

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params: Dict[str, Any]) -> None:
        pass

    def log_checkpoint(self, path: str, aliases: Optional[list] = None) -> None:
        """A checkpoint file was written; trackers with artifact stores may upload it.
        ``aliases`` (from ModelCheckpoint): ``["latest"]``, plus ``"best"`` while the file
        is the best so far."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Once at the start of fit, on global rank zero: trackers that draw the model may
        trace it (``input_array`` defaults to ``model.example_input_array``)."""

    def save(self) -> None:
        pass

    def finalize(self, status: str) -> None:
        self.save()

    def synchronize(self, strategy: Any) -> None:
        """Make every rank agree on run identity (version, run id) before anything uses it;
        called once per run on every rank, collectively."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass
