"""A logger: ``fulmen.loggers.Logger`` receives floats at logging intervals, on rank 0.

``metrics.jsonl`` holds one JSON object per ``log_metrics`` call (``{"step": 3, "loss":
0.2}``). Lines are buffered and appended at ``save()`` (epoch ends, checkpoints) and at
``finalize``, which also runs after an error in training, so nothing logged is lost.
The version (``version_N``) is part of ``state_dict`` so a resumed run appends to the
same file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from fulmen.loggers.base import Logger


class JSONLinesLogger(Logger):
    def __init__(self, save_dir: Union[str, os.PathLike] = ".", name: str = "jsonl_logs",
                 version: Optional[int] = None) -> None:
        self._root = Path(save_dir) / name
        self._name = name
        self._version = version
        self._buffer: List[Dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int:
        if self._version is None:
            taken = [int(p.name[8:]) for p in self._root.glob("version_*") if p.name[8:].isdigit()]
            self._version = max(taken, default=-1) + 1
        return self._version

    @property
    def log_dir(self) -> str:
        return str(self._root / f"version_{self.version}")

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / "metrics.jsonl"

    def log_hyperparams(self, params: Dict[str, Any]) -> None:
        path = Path(self.log_dir) / "hparams.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(params, indent=2, sort_keys=True, default=str))

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        self._buffer.append({"step": step, **{k: float(v) for k, v in metrics.items()}})

    def save(self) -> None:
        if not self._buffer:
            return
        self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in self._buffer)
        self._buffer = []

    def finalize(self, status: str) -> None:
        self.save()

    def state_dict(self) -> Dict[str, Any]:
        return {"version": self.version}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._version = state.get("version", self._version)

    def synchronize(self, strategy: Any) -> None:
        # Every rank must agree on version_N before any of them derives a path from it.
        self._version = strategy.broadcast(self.version if strategy.is_global_zero else None)


def read_metrics(path: Union[str, os.PathLike]) -> Dict[int, Dict[str, float]]:
    """``{step: {name: value}}`` from a ``metrics.jsonl`` (rows of one step merged)."""
    stored: Dict[int, Dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        stored.setdefault(step, {}).update(row)
    return stored
