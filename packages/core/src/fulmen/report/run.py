"""A finished (or running) CSV-logged run, read from its directory: the metric series from
``metrics.csv``, the hyperparameters from ``hparams.json`` (or a Lightning ``hparams.yaml``),
and the checkpoints with ModelCheckpoint's ranking.

Only the standard library and, for the ranking, fulmen's own checkpoint loader are used, so
that a bad run directory is reported before the plotting library is even imported.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fulmen.errors import FulmenConfigError

Series = List[Tuple[int, float]]


@dataclass
class Checkpoint:
    """One checkpoint file of the run and what ModelCheckpoint said about it."""

    path: Path
    size: int
    score: Optional[float] = None
    best: bool = False  # ModelCheckpoint's best_model_path
    last: bool = False  # ModelCheckpoint's last_model_path


@dataclass
class Run:
    """What the report shows, read once."""

    directory: Path
    metrics: Dict[str, Series] = field(default_factory=dict)
    hparams: Dict[str, Any] = field(default_factory=dict)
    checkpoints: List[Checkpoint] = field(default_factory=list)
    monitor: Optional[str] = None
    mode: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # things that could not be read, said on the page

    @property
    def last_step(self) -> Optional[int]:
        steps = [s for series in self.metrics.values() for s, _ in series]
        return max(steps) if steps else None


def read_run(directory: os.PathLike) -> Run:
    """The run in ``directory`` (a CSV logger's ``log_dir``); raises ``FulmenConfigError`` saying
    what is missing when it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FulmenConfigError(
            f"{directory} is not a directory: pass a run directory, the CSV logger's log_dir "
            "(for example lightning_logs/version_0 or fulmen_logs/version_0)"
        )
    metrics_file = directory / "metrics.csv"
    if not metrics_file.is_file():
        found = sorted(p.parent for p in directory.glob("*/metrics.csv")) + sorted(
            p.parent for p in directory.glob("*/*/metrics.csv")
        )
        hint = f"; run directories below it: {', '.join(str(p) for p in found[:5])}" if found else ""
        raise FulmenConfigError(
            f"{directory} has no metrics.csv, so it is not a CSV logger run directory{hint}. "
            "fulmen report reads what Trainer(logger='csv') (the default logger) writes"
        )
    run = Run(directory=directory, metrics=read_metrics(metrics_file))
    run.hparams = read_hparams(directory, run.notes)
    read_checkpoints(run)
    return run


def read_metrics(path: Path) -> Dict[str, Series]:
    """``{name: [(step, value), ...]}`` in file order; empty cells (another metric's row) and
    values that are not numbers are left out. Rows without a step count on from the last."""
    metrics: Dict[str, Series] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        next_step = 0
        for row in reader:
            step = _number(row.get("step"))
            step = next_step if step is None else int(step)
            next_step = step + 1
            for name, cell in row.items():
                if name in (None, "step"):
                    continue
                value = _number(cell)
                if value is not None:
                    metrics.setdefault(name, []).append((step, value))
    return metrics


def _number(cell: Any) -> Optional[float]:
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_hparams(directory: Path, notes: List[str]) -> Dict[str, Any]:
    """The logged hyperparameters, flattened to ``a/b`` keys; {} when none were logged."""
    json_file, yaml_file = directory / "hparams.json", directory / "hparams.yaml"
    try:
        if json_file.is_file():
            data = json.loads(json_file.read_text(encoding="utf-8"))
        elif yaml_file.is_file():
            try:
                import yaml
            except ImportError:
                notes.append("hparams.yaml is there but PyYAML is not installed, so it is not shown")
                return {}
            data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        else:
            return {}
    except (OSError, ValueError) as exc:
        notes.append(f"the hyperparameters could not be read: {exc}")
        return {}
    return flatten(data) if isinstance(data, dict) else {"hparams": data}


def flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def read_checkpoints(run: Run, directory: Optional[Path] = None) -> None:
    """The ``*.ckpt`` files and sharded checkpoint directories in the run's ``checkpoints``
    folder (or ``directory``), with scores and the best/last marks from the ModelCheckpoint
    state in the newest of them."""
    folder = Path(directory) if directory is not None else run.directory / "checkpoints"
    files = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    run.checkpoints = [Checkpoint(path=p, size=_size(p)) for p in files]
    if not files:
        return
    state = _model_checkpoint_state(files[-1], run.notes)
    if not state:
        return
    run.monitor, run.mode = state.get("monitor"), state.get("mode")
    by_name = {Path(path).name: score for path, score in (state.get("best_k_models") or {}).items()}
    best = Path(state.get("best_model_path") or "").name
    last = Path(state.get("last_model_path") or "").name
    for checkpoint in run.checkpoints:
        name = checkpoint.path.name
        score = by_name.get(name)
        checkpoint.score = float(score) if score is not None else None
        checkpoint.best = bool(best) and name == best
        checkpoint.last = bool(last) and name == last


def _size(path: Path) -> int:
    """Bytes on disk: a sharded checkpoint (a directory) counts every file in it."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _model_checkpoint_state(path: Path, notes: List[str]) -> Dict[str, Any]:
    """The first ModelCheckpoint's state saved in checkpoint ``path`` (loaded as data only).
    The tensors are memory-mapped, never read: only the callbacks' small entries are wanted.
    A sharded directory is read through its metadata file (which holds everything but the
    shards); one without a known metadata file is not consolidated just for the ranking."""
    from fulmen.io.metadata import DIRECTORY_METADATA_FILES, read_small_entries

    try:
        checkpoint = read_small_entries(path)
    except Exception as exc:  # a damaged or foreign file must not stop the report
        notes.append(f"{path.name} could not be read for ModelCheckpoint's ranking: {exc}")
        return {}
    if checkpoint is None:
        notes.append(f"{path.name} is a checkpoint directory without a metadata file the report "
                     f"reads ({', '.join(DIRECTORY_METADATA_FILES)}): ModelCheckpoint's ranking is not shown")
        return {}
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            return state
    return {}
