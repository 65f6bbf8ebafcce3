"""The spool: an append-only file of records not yet delivered, and the acknowledgement of
how far delivery got. Appends come from two threads (the training thread on overflow and
``persist``, the delivery thread otherwise); the file is only ever emptied, never rewritten,
so a process killed at any point leaves every record readable or, at worst, one torn line."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from fulmen_loggers._records import (
    ACK_FILE,
    METRICS,
    REWIND,
    SPOOL_FILE,
    Record,
    Seq,
    log,
    read_json,
    write_text_atomic,
)


class Spool:
    """``spool.jsonl`` (append-only records) and ``spool.ack`` (highest delivered sequence)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        self.ack_path = self.directory / ACK_FILE
        self._lock = threading.Lock()
        self._handle = None
        self._ack: Optional[Seq] = None
        # True while the file may hold records that were not delivered; read without the
        # lock by the delivery thread (a stale True only costs one extra read of the file).
        self.dirty = self.path.exists() and self.path.stat().st_size > 0
        self.max_seq: Seq = (0, 0)  # highest sequence number in the file (set by reads, appends)
        self.last_read_size = 0

    def append(self, records: Iterable[Record]) -> int:
        """Add records at the end of the file and flush them to the OS (no fsync: a killed process
        loses nothing, only a crashed machine might); return how many."""
        records = list(records)
        text = "".join(r.to_line() for r in records)
        if not text:
            return 0
        with self._lock:
            if self._handle is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a", encoding="utf-8")
                if _ends_torn(self.path):
                    self._handle.write("\n")  # end a dead writer's torn line; it stays unreadable alone
            self._handle.write(text)
            self._handle.flush()
            self.dirty = True
            self.max_seq = max([self.max_seq] + [r.seq for r in records])
        return len(records)

    def ack(self) -> Seq:
        """The highest sequence number delivered (``spool.ack``, read once and then cached)."""
        if self._ack is None:
            value = read_json(self.ack_path, None)
            self._ack = (int(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else (0, 0)
        return self._ack

    def write_ack(self, seq: Seq) -> None:
        """Note that everything up to ``seq`` was delivered; the acknowledgement never moves back."""
        if seq <= self.ack():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.ack_path, json.dumps(list(seq)))
        self._ack = seq

    def read(self, offset: int = 0) -> Tuple[List[Record], int]:
        """Every parseable record from byte ``offset`` on, and the offset after the last
        complete line (a torn last line, from a process killed mid-write, is left for later)."""
        records: List[Record] = []
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                raw = handle.read()
        except FileNotFoundError:
            self.last_read_size = 0
            return records, 0
        self.last_read_size = offset + len(raw)
        complete = raw.rfind(b"\n") + 1
        raw = raw[:complete]
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                records.append(Record.from_obj(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                log.warning("skipping an unreadable line in %s", self.path)
        if records:
            self.max_seq = max(self.max_seq, max(r.seq for r in records))
        return records, offset + complete

    @staticmethod
    def ordered(records: List[Record], after: Seq) -> List[Record]:
        """Records after ``after`` in sequence order, each once, rewinds applied."""
        by_seq: Dict[Seq, Record] = {}
        for record in records:
            if record.seq > after:
                by_seq[record.seq] = record  # the same record may be spooled twice (persist + failure)
        out: List[Record] = []
        for seq in sorted(by_seq):
            record = by_seq[seq]
            if record.kind == REWIND:
                limit = record.step
                out = [
                    r
                    for r in out
                    if not (r.kind == METRICS and r.step is not None and r.gen < record.gen and r.step > limit)
                ]
                continue
            out.append(record)
        return out

    def pending(self, after: Optional[Seq] = None) -> Tuple[List[Record], Seq, int]:
        """Undelivered records in sequence order, rewinds applied; plus the highest sequence
        number seen in the file (delivering everything means acknowledging it) and the size read."""
        records, _ = self.read()
        ack = self.ack() if after is None else max(self.ack(), after)
        highest = max((r.seq for r in records), default=ack)
        return self.ordered(records, ack), highest, self.last_read_size

    def pending_count(self) -> int:
        """How many records still wait for delivery (reads the file)."""
        return len(self.pending()[0]) if self.path.exists() else 0

    def truncate_if_unchanged(self, size: int) -> bool:
        """Empty the file if nothing was appended since it was read at ``size`` bytes."""
        with self._lock:
            try:
                current = self.path.stat().st_size
            except FileNotFoundError:
                self.dirty = False
                return True
            if current != size:
                return False
            if self._handle is not None:
                self._handle.truncate(0)  # O_APPEND: later writes start at the new end
            else:
                os.truncate(self.path, 0)
            self.dirty = False
            return True

    def close(self) -> None:
        """Flush, fsync and close the file: the process may end next, and the records must outlive it."""
        with self._lock:
            if self._handle is not None:
                try:
                    self._handle.flush()
                    os.fsync(self._handle.fileno())
                except OSError:
                    pass
                self._handle.close()
                self._handle = None


def _ends_torn(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False
