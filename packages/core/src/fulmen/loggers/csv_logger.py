"""The default logger: ``metrics.csv`` and ``hparams.json`` under ``save_dir/name/version_N``.

No dependency beyond the standard library, so every install can read its own curves.
Rows are buffered and written every ``flush_logs_every_n_steps`` and at epoch ends; when a
new metric name appears the file is rewritten with the wider header.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from fulmen.io.atomic import atomic_open
from fulmen.loggers.arguments import prefixed, resolve_save_dir
from fulmen.loggers.base import Logger


class CSVLogger(Logger):
    """The default logger (``logger=True`` or ``"csv"``): ``metrics.csv`` and ``hparams.json`` in
    ``save_dir/name/version_N``, with nothing to install.

    The arguments are Lightning's (``CSVLogger(save_dir, ...)`` of its Trainer and
    ``CSVLogger(root_dir, ...)`` of Fabric give the same layout here).

    Args:
        save_dir: The directory that holds the experiment folder (default ``"."``).
        name: The experiment folder under ``save_dir``; ``""`` or ``None`` for none.
        version: An int (``version_N``) or a folder name; ``None`` picks the next free
            ``version_N``, agreed on by every rank in a multi-process run.
        prefix: Put before every metric name, joined with ``-`` (Lightning's rule).
        flush_logs_every_n_steps: Rows buffered before they are written; epoch ends and
            checkpoints write them too.
        root_dir: Lightning Fabric's name for ``save_dir``; pass one of the two."""

    def __init__(
        self,
        save_dir: Optional[Union[str, os.PathLike]] = None,
        name: Optional[str] = "fulmen_logs",
        version: Optional[Union[int, str]] = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        *,
        root_dir: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        self._save_dir = resolve_save_dir("CSVLogger", save_dir, root_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._flush_every = max(1, int(flush_logs_every_n_steps))
        self._rows: List[Dict[str, Any]] = []
        self._header: List[str] = []
        self._pending = 0
        self._file_rows: Optional[int] = None  # data rows in metrics.csv, once known

    @property
    def name(self) -> str:
        """The experiment folder under ``save_dir``."""
        return self._name

    @property
    def save_dir(self) -> str:
        """The folder given as ``save_dir`` (or ``root_dir``) that holds the experiment folder."""
        return str(self._save_dir)

    @property
    def version(self) -> Union[int, str]:
        """The version given, or the next free ``version_N`` number (decided on first use)."""
        if self._version is None:
            self._version = self._next_version()
        return self._version

    @property
    def root_dir(self) -> Path:
        """``save_dir/name``: where every version of this experiment lives (Lightning's
        property of this name, which is not the ``root_dir`` argument but its ``name`` folder)."""
        return self._save_dir / self._name

    @property
    def log_dir(self) -> str:
        """This run's folder: ``save_dir/name/version_N`` (or the string version as the folder name)."""
        version = self.version
        folder = version if isinstance(version, str) else f"version_{version}"
        return str(self.root_dir / folder)

    @property
    def metrics_file(self) -> Path:
        """``log_dir/metrics.csv``, one row per ``log_metrics`` call with a ``step`` column first."""
        return Path(self.log_dir) / "metrics.csv"

    def _next_version(self) -> int:
        taken = []
        if self.root_dir.is_dir():
            for entry in self.root_dir.iterdir():
                if entry.is_dir() and entry.name.startswith("version_"):
                    suffix = entry.name[len("version_"):]
                    if suffix.isdigit():
                        taken.append(int(suffix))
        return max(taken) + 1 if taken else 0

    def log_hyperparams(self, params: Dict[str, Any]) -> None:
        """Write ``hparams.json`` in :attr:`log_dir` (values that JSON cannot hold as their ``str``)."""
        path = Path(self.log_dir) / "hparams.json"
        with atomic_open(path) as handle:
            handle.write(json.dumps(params, indent=2, sort_keys=True, default=str).encode())

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        """Buffer one row; the file is written every ``flush_logs_every_n_steps`` rows. A metric
        name not seen before widens the header (the file is rewritten, older rows get empty cells)."""
        if self._prefix:
            metrics = {prefixed(self._prefix, key): value for key, value in metrics.items()}
        row = {"step": step, **metrics}
        self._rows.append(row)
        self._pending += 1
        if self._pending >= self._flush_every:
            self.save()

    def save(self) -> None:
        """Write the buffered rows to ``metrics.csv`` (atomically when the header changes)."""
        if not self._rows:
            return
        path = self.metrics_file
        path.parent.mkdir(parents=True, exist_ok=True)
        new_keys = sorted({k for row in self._rows for k in row} - set(self._header) - {"step"})
        if new_keys or not path.exists():
            # A wider header means rewriting the file; old rows get empty cells.
            old_rows = _read_rows(path) if path.exists() else []
            # Columns already in the file stay (a logger reusing a version starts with no header).
            old_keys = {k for row in old_rows for k in row if k is not None}
            self._header = ["step"] + sorted((set(self._header) | old_keys | set(new_keys)) - {"step"})
            with atomic_open(path) as handle:
                text = _render(self._header, old_rows + self._rows, with_header=True)
                handle.write(text.encode())
            self._file_rows = len(old_rows) + len(self._rows)
        else:
            with open(path, "a", newline="") as handle:
                handle.write(_render(self._header, self._rows, with_header=False))
            if self._file_rows is not None:
                self._file_rows += len(self._rows)
        self._rows = []
        self._pending = 0

    def finalize(self, status: str) -> None:
        """Write the buffered rows; nothing else to close."""
        self.save()

    def synchronize(self, strategy: Any) -> None:
        """Every rank takes rank zero's version, so no two ranks race for the next ``version_N``."""
        # Rank 0's next free version for everyone; ranks deciding alone race on version_N.
        self._version = strategy.broadcast(self.version if strategy.is_global_zero else None)

    def state_dict(self) -> Dict[str, Any]:
        """The version and how many rows the file holds, so a resumed run continues the same file."""
        # How many rows the file holds now (the Trainer saves the logger first): a resumed
        # run keeps exactly these, whatever the crashed run appended after the checkpoint.
        if self._file_rows is None:
            self._file_rows = len(_read_rows(self.metrics_file)) if self.metrics_file.exists() else 0
        return {"version": self.version, "rows": self._file_rows + len(self._rows)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the same version's file. Rows logged after the checkpoint by the run
        that crashed are dropped, because the resumed run logs them again: the rows past the
        count the checkpoint recorded, or (older checkpoints) those past its step."""
        self._version = state.get("version", self._version)
        path = self.metrics_file
        if not path.exists():
            return
        with open(path, newline="") as handle:
            self._header = next(csv.reader(handle), [])
        step = state.get("step")
        if step is None and "rows" not in state:
            return
        rows = _read_rows(path)
        if "rows" in state:
            kept = rows[: int(state["rows"])]
        else:
            kept = [row for row in rows if not row.get("step") or float(row["step"]) <= step]
        self._file_rows = len(kept)
        if len(kept) != len(rows):
            with atomic_open(path) as handle:
                handle.write(_render(self._header, kept, with_header=True).encode())


def _read_rows(path: Path) -> List[Dict[str, Any]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _render(header: List[str], rows: List[Dict[str, Any]], with_header: bool) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    if with_header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
