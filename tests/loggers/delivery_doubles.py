"""A small file-backed tracker for testing the delivery engine without a tracking library.

It is a real backend as far as fulmen-loggers is concerned (a Sink subclass and a logger built
on ``TrackingLogger``, found by ``fulmen loggers replay`` through ``meta.json``), whose
availability the test controls with files: ``down`` makes every call fail as a refused
connection would, ``hang`` makes calls wait as a black-holed server would. What it received
is appended to ``store.jsonl``, one line per record, so tests (and other processes) can read
it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from fulmen_loggers._records import METRICS, Record
from fulmen_loggers._sink import Sink
from fulmen_loggers._tracking_logger import TrackingLogger


class FileBackend:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def store(self) -> Path:
        return self.root / "store.jsonl"

    def down(self, flag: bool = True) -> None:
        self._flag("down", flag)

    def hang(self, flag: bool = True) -> None:
        self._flag("hang", flag)

    def _flag(self, name: str, flag: bool) -> None:
        path = self.root / name
        if flag:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def received(self) -> List[Dict[str, Any]]:
        if not self.store.exists():
            return []
        return [json.loads(line) for line in self.store.read_text().splitlines() if line.strip()]

    def metric_steps(self, key: str) -> List[int]:
        return [r["step"] for r in self.received() if r["kind"] == METRICS and key in r["data"]]


class FileBackendSink(Sink):
    label = "FileBackend"

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.backend = FileBackend(meta["settings"]["root"])
        self.calls = 0

    def _gate(self) -> None:
        while (self.backend.root / "hang").exists():
            time.sleep(0.01)
        if (self.backend.root / "down").exists():
            raise ConnectionRefusedError("[Errno 111] Connection refused (test backend is down)")

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        self._gate()
        return {"run_id": "file-run"}

    def chunks(self, records: List[Record]):
        for i in range(0, len(records), 50):
            yield records[i : i + 50]

    def send(self, chunk: List[Record]) -> None:
        self._gate()
        for record in chunk:
            if record.kind == METRICS and "poison" in record.data:
                raise ValueError("metric 'poison' is not accepted")
        self.calls += 1
        with open(self.backend.store, "a") as handle:
            for record in chunk:
                handle.write(
                    json.dumps(
                        {
                            "kind": record.kind,
                            "step": record.step,
                            "data": record.data,
                            "seq": list(record.seq),
                            "call": self.calls,
                        }
                    )
                    + "\n"
                )

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, ValueError)


def build_sink(meta: Dict[str, Any]) -> FileBackendSink:
    return FileBackendSink(meta)


class FileBackendLogger(TrackingLogger):
    LABEL = "FileBackend"
    BACKEND = "file"
    SINK = "delivery_doubles:build_sink"

    def __init__(self, backend_root, save_dir=".", version=None, **delivery: Any) -> None:
        super().__init__(save_dir, **delivery)
        self._backend_root = str(backend_root)
        self._version = version

    @property
    def version(self):
        if self._version is None:
            self._version = self._next_version()
        return self._version

    def _root_dir(self) -> Path:
        return self._save_dir / "filebackend"

    def _settings(self) -> Dict[str, Any]:
        return {"root": self._backend_root}
