"""What the delivery engine moves around: a record, its kinds, and the delivery directory's
file names (one place, so the engine, the loggers and the replay command agree on them)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from fulmen.errors import FulmenWarning

log = logging.getLogger("fulmen_loggers")

DELIVERY_DIR = "fulmen-delivery"
SPOOL_FILE = "spool.jsonl"
ACK_FILE = "spool.ack"
META_FILE = "meta.json"
LEDGER_FILE = "delivered.json"
REJECTED_FILE = "rejected.jsonl"
GENERATION_FILE = "generation"
LOCK_FILE = "lock"

# Record kinds
METRICS = "metrics"  # data: {name: float}; step: the trainer's global step
PARAMS = "params"  # data: {"flat": {name: str|number|bool}, "nested": {...}}
ARTIFACT = "artifact"  # data: {"path", "staged", "name", "aliases", "artifact_path"}
GRAPH = "graph"  # data: {"graph": base64 GraphDef, "stats": base64 RunMetadata}
END = "end"  # data: {"status": "success"|"failed"|"interrupted", "metric_keys": [...]}
REWIND = "rewind"  # step: the checkpoint step of a resumed run; never sent

Seq = Tuple[int, int]


class FulmenLoggerWarning(FulmenWarning):
    """A tracking backend is unreachable or refused something; training goes on."""


class Record:
    """One thing to send; its JSON line is what the spool holds."""

    __slots__ = ("gen", "n", "kind", "step", "ts", "data")

    def __init__(self, gen: int, n: int, kind: str, step: Optional[int], ts: int, data: Any) -> None:
        self.gen = gen
        self.n = n
        self.kind = kind
        self.step = step
        self.ts = ts  # milliseconds since the epoch, when the training thread logged it
        self.data = data

    @property
    def seq(self) -> Seq:
        """``(generation, n)``: the order in which records reach the backend, across processes."""
        return (self.gen, self.n)

    def with_data(self, data: Any) -> "Record":
        """The same record with other data (a resumed run's metrics less those already delivered),
        under the same sequence number, so that its acknowledgement still matches."""
        return Record(self.gen, self.n, self.kind, self.step, self.ts, data)

    def to_line(self) -> str:
        """The record as one line of the spool, newline included."""
        obj = {"g": self.gen, "n": self.n, "k": self.kind, "s": self.step, "t": self.ts, "d": self.data}
        return json.dumps(obj, separators=(",", ":"), default=str) + "\n"

    @classmethod
    def from_obj(cls, obj: Dict[str, Any]) -> "Record":
        """A record back from a parsed spool line (the inverse of :meth:`to_line`)."""
        return cls(int(obj["g"]), int(obj["n"]), str(obj["k"]), obj.get("s"), int(obj.get("t") or 0), obj.get("d"))

    def __repr__(self) -> str:
        return f"Record({self.kind}, seq={self.seq}, step={self.step})"


def now_ms() -> int:
    """Wall-clock time in milliseconds: the timestamp stored with each record and sent with each value."""
    return int(time.time() * 1000)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (write then rename; no fsync: these files are bookkeeping
    that survives a process crash, and the spool it describes is replayed idempotently)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    """``path`` parsed, or ``default`` when it is missing or damaged: bookkeeping left by a process
    that died must never stop a run or a replay."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default
