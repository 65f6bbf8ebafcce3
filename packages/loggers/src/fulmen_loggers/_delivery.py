"""The delivery engine every logger of this package is built on: never block the step, never lose a record.

::

    training thread                          delivery thread (one per logger, daemon)
    ---------------                          -----------------------------------------
    log_metrics() -> Record -> bounded buffer -> batch -> Sink.send()  (log_batch, run.log, add_scalar)
                                  | full                     | backend down / timeout / 5xx
                                  v                          v
                             spool.jsonl  <-------------  spool.jsonl  -> replayed in order when the
                            (append-only)                               backend answers again, at
                                                                        finalize, or by
                                                                        ``fulmen loggers replay DIR``

Rules, and why:

- The training thread only appends to an in-memory buffer (``submit``). It touches the disk in
  two cases: the buffer is full because the delivery thread is stuck in a slow call (the
  record goes to the spool file instead of waiting), and ``persist`` (called by the logger's
  ``save()`` right before a checkpoint is written), which moves the records still in memory
  to the spool so that a checkpoint never exists while metrics logged before it live only in
  memory. Neither waits on the network.
- Every record has a sequence number ``(generation, n)``; the generation grows each time a
  process opens the run directory (a resumed run is a new generation). Records reach the
  backend in sequence order: while the spool holds undelivered records, new batches are
  appended behind them instead of being sent directly.
- ``spool.ack`` holds the highest sequence number delivered; the spool itself is never
  rewritten, only appended to and emptied once everything in it was delivered.
- A call that fails may still have arrived (a timeout, a server killed mid-request, a process
  killed mid-call). Before sending again, the dispatcher asks the backend for each metric's
  latest (step, timestamp) where it can say (``Sink.latest_metrics``) and skips what is there.
- Backends that accept records but keep them in memory for a while (W&B) are written ahead:
  every record is journaled in the spool before it is sent, and acknowledged only when the
  run's end made the backend's own log complete.
- Failures the backend calls permanent (a refused value) are not retried forever: the record
  goes to ``rejected.jsonl`` with the error, and a warning says so.
- Resumed runs: the logger appends a ``rewind`` record that drops spooled metrics logged after
  the checkpoint by the process that died (the resumed run logs those steps again), and the
  resumed run does not send values at steps that an earlier process of the run already
  delivered (``delivered.json``, or the backend's own answer), so no step is missing or doubled.

The pieces: ``_records`` (a record, its kinds, the directory's file names), ``_spool`` (the
file and its acknowledgement), ``_sink`` (what a backend implements, the options),
``_dir_lock`` (one drainer per directory); this module is the dispatcher that moves records.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import math
import random
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from fulmen_loggers._dir_lock import try_lock, unlock
from fulmen_loggers._records import (
    END,
    GENERATION_FILE,
    LEDGER_FILE,
    META_FILE,
    METRICS,
    REJECTED_FILE,
    REWIND,
    FulmenLoggerWarning,
    Record,
    Seq,
    log,
    now_ms,
    read_json,
    write_text_atomic,
)
from fulmen_loggers._sink import DeliveryOptions, Sink, describe, load_sink_factory
from fulmen_loggers._spool import Spool

_live: "collections.OrderedDict[int, Dispatcher]" = collections.OrderedDict()
_live_lock = threading.Lock()
_atexit_registered = False


def _close_all_at_exit() -> None:
    with _live_lock:
        dispatchers = list(_live.values())
    for dispatcher in dispatchers:
        try:
            if dispatcher.at_exit is not None:
                dispatcher.at_exit()
            else:
                dispatcher.close()
        except Exception as exc:  # the interpreter is going away; say what happened, do not raise
            log.warning("closing %s at exit failed: %s", dispatcher.label, describe(exc))


def _register(dispatcher: "Dispatcher") -> None:
    global _atexit_registered
    with _live_lock:
        _live[id(dispatcher)] = dispatcher
        if not _atexit_registered:
            atexit.register(_close_all_at_exit)
            _atexit_registered = True


def _unregister(dispatcher: "Dispatcher") -> None:
    with _live_lock:
        _live.pop(id(dispatcher), None)


def _read_ledger(directory: Path) -> Dict[str, float]:
    """``delivered.json``: the highest step delivered per metric, as earlier processes left it."""
    ledger = read_json(directory / LEDGER_FILE, {})
    return {str(k): float(v) for k, v in ledger.items()} if isinstance(ledger, dict) else {}


class Dispatcher:
    """Owns one run directory's delivery: buffer, delivery thread, spool, ledger."""

    def __init__(
        self,
        make_sink: Callable[[Dict[str, Any]], Sink],
        directory: Path,
        label: str,
        options: DeliveryOptions,
        settings: Dict[str, Any],
        resume_step: Optional[int] = None,
    ) -> None:
        self.make_sink = make_sink
        self.directory = Path(directory)
        self.label = label
        self.options = options
        self.settings = settings
        self.resume_step = resume_step
        # Backends that hold records in memory after accepting them (W&B's service writes its
        # log in 32 KiB blocks) get every record journaled to the spool before it is sent;
        # the journal is acknowledged only when the run's end made everything durable.
        self.write_ahead = bool(settings.get("write_ahead"))
        self.spool = Spool(self.directory)
        self.meta: Dict[str, Any] = {}
        self.identity: Dict[str, Any] = {}
        self.at_exit: Optional[Callable[[], None]] = None
        self.stats = collections.Counter()
        self.last_error = ""
        self._cv = threading.Condition()
        self._buf: "collections.deque[Record]" = collections.deque()
        self._inflight: List[Record] = []
        self._inflight_spooled = False
        self._flush_requested = False
        self._closing = False
        self._close_deadline = math.inf
        self._finished = False
        self._popped: Seq = (0, 0)
        self._done: Seq = (0, 0)
        self._gen = 0
        self._counter = itertools.count(1)
        self._thread: Optional[threading.Thread] = None
        self._sink: Optional[Sink] = None
        self._opened = False
        self._hw: Dict[str, float] = {}  # highest step delivered per metric (delivered.json)
        self._hw_dirty = False
        # Resumed runs: highest step per metric that earlier processes of this run delivered;
        # this process's own records at or below it are not sent again.
        self._prior: Dict[str, float] = {}
        self._dedup_gen: Optional[int] = None
        self._reconcile = False  # a call failed mid-way: check what arrived before resending
        self._next_try = 0.0
        self._backoff = options.retry_initial
        self._outage_since: Optional[float] = None
        self._warned_outage = False
        self._lock_fd: Optional[int] = None
        self._closed_remaining: Optional[int] = None
        self._delivered_seq: Optional[Seq] = None
        self._sent: Seq = (0, 0)  # write-ahead: highest sequence handed to the backend
        self._confirmed: Optional[Seq] = None  # write-ahead: the run's end was delivered up to here
        self._offset = 0  # write-ahead: bytes of the journal already read

    # ------------------------------------------------------------------ training thread
    def start(self) -> None:
        """Open the run directory as a new generation (``meta.json``, the ledger, a rewind record
        when a checkpoint resumed the run) and start the delivery thread; called once, when the
        logger has its first record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._gen = self._next_generation()
        meta = read_json(self.directory / META_FILE, {})
        meta.update({k: v for k, v in self.settings.items() if v is not None or k not in meta})
        meta.setdefault("identity", {})
        # Written before any call, so a backend that creates a run can tag it with this and
        # find it again when the reply to the create call was lost (or the process died
        # before it could note the run's id): one run per run directory, never two.
        # A checkpoint carries it in the logger's identity, so a run resumed in another
        # directory (its meta.json gone) still finds the run an earlier process created.
        restored = meta.get("restored_identity") or {}
        meta.setdefault("run_key", restored.get("run_key") or uuid.uuid4().hex)
        meta["identity"].setdefault("run_key", meta["run_key"])
        self.meta = meta
        self.identity = dict(meta["identity"])
        write_text_atomic(self.directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str))
        self._hw = _read_ledger(self.directory)
        if self.spool.pending_count():
            self._reconcile = True  # an earlier process may have died in the middle of a call
        if self.resume_step is not None:
            self._dedup_gen = self._gen
            # delivered.json says what was accepted; a write-ahead backend may have lost that.
            self._prior = {} if self.write_ahead else dict(self._hw)
            if self.spool.dirty:
                self.spool.append(
                    [Record(self._gen, next(self._counter), REWIND, int(self.resume_step), now_ms(), None)]
                )
        self._thread = threading.Thread(target=self._run, name=f"fulmen-{self.label.lower()}-delivery", daemon=True)
        self._thread.start()
        _register(self)

    def _next_generation(self) -> int:
        path = self.directory / GENERATION_FILE
        try:
            previous = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            previous = 0
        # Records already in the spool may come from a generation whose file write was lost.
        records, _ = self.spool.read()
        previous = max([previous, self.spool.ack()[0]] + [r.gen for r in records])
        write_text_atomic(path, str(previous + 1))
        return previous + 1

    def submit(self, kind: str, data: Any, step: Optional[int] = None) -> None:
        """Hand a record to the delivery thread; never waits."""
        record = Record(self._gen, next(self._counter), kind, step, now_ms(), data)
        self.stats["submitted"] += 1
        with self._cv:
            buffered = len(self._buf)
            if not self._finished and buffered < self.options.queue_size:
                self._buf.append(record)
                # Wake the thread only when it has something new to decide: it sleeps until a
                # first record arrives, then gathers a batch on its own timer (waking it for
                # every record would cost a thread switch per log call).
                if buffered == 0 or buffered + 1 >= self.options.max_batch or kind == END:
                    self._cv.notify()
                return
            # The delivery thread is stuck in a slow call (or gone): keep the step moving and
            # the records safe on disk. The buffer goes to the spool with this record, so what
            # stays in memory is always newer than anything spooled: the drain acknowledges
            # the spool up to its highest sequence number, and a buffered record older than
            # that would be acknowledged without being sent.
            # Appended under the lock: were another logging thread's record to reach the
            # backend (and its acknowledgement the spool) before these were written, they
            # would count as delivered.
            spilled = list(self._buf)
            self._buf.clear()
            spilled.append(record)
            self.spool.append(spilled)
            self.stats["overflowed"] += len(spilled)

    def persist(self) -> None:
        """Move what is still in memory to the spool (before a checkpoint is written)."""
        with self._cv:  # appended under the lock, for the reason ``submit`` gives
            records = list(self._inflight) + list(self._buf)
            if self._inflight:
                self._inflight_spooled = True
            if self._buf:
                self._popped = max(self._popped, self._buf[-1].seq)
                self._buf.clear()
            if records:
                self.spool.append(records)
                self.stats["persisted"] += len(records)
                self._done = max(self._done, records[-1].seq)
            self._cv.notify_all()

    def request_flush(self) -> None:
        """Ask the delivery thread to send what is buffered now, not at the end of its batch interval; does not wait."""
        with self._cv:
            self._flush_requested = True
            self._cv.notify_all()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record submitted so far is delivered or spooled."""
        with self._cv:
            target = self._buf[-1].seq if self._buf else self._popped
            self._flush_requested = True
            self._cv.notify_all()
            return self._cv.wait_for(lambda: self._done >= target or self._finished, timeout)

    def wait_delivered(self, timeout: Optional[float] = None) -> bool:
        """Wait until nothing is buffered, in flight or spooled (for tests and ``save``-points)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                idle = not self._buf and not self._inflight
            if idle and not self._backlog():
                return True
            if self._finished or (deadline is not None and time.monotonic() >= deadline):
                return False
            self.request_flush()
            time.sleep(0.02)

    def close(self, timeout: Optional[float] = None) -> int:
        """Deliver what is left, waiting at most ``timeout`` seconds (the options' close
        timeout by default); return how many records are still spooled, and say where."""
        if self._closed_remaining is not None:
            return self._closed_remaining
        timeout = self.options.close_timeout if timeout is None else max(0.0, timeout)
        with self._cv:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._cv.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout + 2.0)
            if thread.is_alive():
                # Stuck in one backend call past the deadline: keep what it holds.
                self.persist()
                with self._cv:
                    self._finished = True
                    self._cv.notify_all()
        self.spool.close()
        remaining = self.spool.pending_count()
        self._closed_remaining = remaining
        _unregister(self)
        run_dir = self.directory.parent
        if remaining:
            message = (
                f"{self.label}: {remaining} record(s) could not be delivered"
                + (f" ({self.last_error})" if self.last_error else "")
                + f"; they are kept in {self.spool.path} and will be sent when this run resumes,"
                f" or run: fulmen loggers replay {run_dir}"
            )
            warnings.warn(message, FulmenLoggerWarning, stacklevel=3)
        elif self.stats["spooled"] or self.stats["overflowed"] or self.stats["persisted"]:
            log.info("%s: every record was delivered (%d went through the spool)", self.label, self.stats["spooled"])
        if self.stats["rejected"]:
            warnings.warn(
                f"{self.label}: the backend refused {self.stats['rejected']} record(s); they are kept with "
                f"the error in {self.directory / REJECTED_FILE}",
                FulmenLoggerWarning,
                stacklevel=3,
            )
        return remaining

    @property
    def is_alive(self) -> bool:
        """Whether the delivery thread runs (false before ``start`` and once it finished)."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ replay command
    @classmethod
    def for_replay(cls, directory: Path, meta: Dict[str, Any], options: DeliveryOptions) -> "Dispatcher":
        """A dispatcher that only drains an existing spool, on the calling thread."""
        dispatcher = cls(
            load_sink_factory(str(meta["sink"])),
            directory,
            str(meta.get("label") or meta.get("backend")),
            options,
            {"write_ahead": meta.get("write_ahead")},
        )
        dispatcher.meta = {**meta, "replaying": True}
        dispatcher.identity = dict(meta.get("identity") or {})
        dispatcher._hw = _read_ledger(directory)
        return dispatcher

    def replay(self, timeout: float) -> Tuple[int, int]:
        """Drain the spool, retrying with backoff for up to ``timeout`` seconds; return
        (records delivered, records still spooled)."""
        deadline = time.monotonic() + timeout
        self._reconcile = True  # the process that spooled may have died mid-call
        records, _ = self.spool.read()
        self._gen = max([self.spool.ack()[0]] + [r.gen for r in records]) + 1
        ended = any(r.kind == END for r in records)
        try:
            while self._backlog() or (self.write_ahead and self.spool.max_seq > self.spool.ack()):
                if self.write_ahead and not self._backlog() and not ended:
                    # Everything is sent but the dead process never ended the run, and a
                    # write-ahead backend makes records durable only then: end it here.
                    self.spool.append([Record(self._gen, 1, END, None, now_ms(), {"status": "failed"})])
                    ended = True
                self._drain()
                now = time.monotonic()
                if (
                    not (self._backlog() or (self.write_ahead and self.spool.max_seq > self.spool.ack()))
                    or now >= deadline
                ):
                    break
                time.sleep(max(0.0, min(self._next_try - now, deadline - now)))
        finally:
            self._save_ledger()
            self._close_sink()
            self.spool.close()
        return self.stats["delivered"], self.spool.pending_count()

    # ------------------------------------------------------------------ delivery thread
    def _backlog(self) -> bool:
        """Records wait in the spool to be sent (new records must queue behind them)."""
        if self.write_ahead:
            return self.spool.max_seq > max(self.spool.ack(), self._sent)
        return self.spool.dirty

    def _run(self) -> None:
        try:
            self._lock_directory()
            while True:
                batch = self._take()
                if batch:
                    self._handle(batch)
                    self._settle(batch)  # before any drain: it would send a persisted copy again
                if self._backlog() and time.monotonic() >= self._next_try:
                    self._drain()
                self._save_ledger()
                with self._cv:
                    self._cv.notify_all()
                    closing, buffered = self._closing, bool(self._buf)
                if self._finished:
                    break  # close() gave up waiting for this thread and spooled what it held
                if closing and not buffered:
                    if not self._backlog() or time.monotonic() >= self._close_deadline:
                        break
        except BaseException as exc:  # a bug here must not lose records
            log.error("%s delivery thread failed: %s", self.label, describe(exc), exc_info=True)
            self.last_error = describe(exc)
            self.persist()
        finally:
            self._save_ledger()
            self._close_sink()
            self._unlock_directory()
            with self._cv:
                self._finished = True
                self._cv.notify_all()

    def _settle(self, batch: List[Record]) -> None:
        """The batch in flight is handled: sent, or spooled to be sent in order later."""
        with self._cv:
            spooled = self._inflight_spooled
            self._done = max(self._done, batch[-1].seq)
            self._inflight = []
            self._inflight_spooled = False
            self._cv.notify_all()
        if spooled and self._delivered_seq is not None and not self.write_ahead:
            # persist() copied this batch to the spool while it was being sent: what was
            # delivered of it must not be sent again from there.
            self.spool.write_ack(self._delivered_seq)

    def _take(self) -> List[Record]:
        first_seen: Optional[float] = None
        with self._cv:
            while True:
                now = time.monotonic()
                buf = self._buf
                if buf:
                    if first_seen is None:
                        first_seen = now
                    if (
                        self._flush_requested
                        or self._closing
                        or len(buf) >= self.options.max_batch
                        or now - first_seen >= self.options.flush_interval
                        or buf[-1].kind == END
                    ):
                        break
                elif self._closing or self._flush_requested:
                    self._flush_requested = False
                    if not self._backlog() or now >= self._next_try or now >= self._close_deadline:
                        return []
                backlog = self._backlog()
                if backlog and now >= self._next_try:
                    return []
                waits = []
                if buf:
                    waits.append(first_seen + self.options.flush_interval - now)
                if backlog:
                    waits.append(self._next_try - now)
                if self._closing:
                    waits.append(self._close_deadline - now)
                timeout = max(0.0, min(waits)) if waits else None
                self._cv.wait(timeout if timeout is None else max(timeout, 0.001))
            n = min(len(buf), self.options.max_batch)
            batch = [buf.popleft() for _ in range(n)]
            self._inflight = batch
            self._popped = max(self._popped, batch[-1].seq)
            if not buf:
                self._flush_requested = False
            return batch

    def _handle(self, batch: List[Record]) -> None:
        if self.write_ahead:
            self.stats["journaled"] += self.spool.append(batch)
            if time.monotonic() >= self._next_try:
                self._drain()
            return
        if self.spool.dirty or not self._ensure_open():
            self._to_spool(batch)
            return
        remaining = self._deliver(batch, from_spool=False)
        if remaining:
            self._to_spool(remaining)

    def _to_spool(self, records: List[Record]) -> None:
        self.stats["spooled"] += self.spool.append(records)

    def _ensure_open(self) -> bool:
        if self._opened:
            return True
        try:
            if self._sink is None:
                self._sink = self.make_sink(self.meta)
            identity = self._sink.open(self.resume_step) or {}
            if self._dedup_gen is not None:
                latest = self._sink.latest_metrics()  # the backend's word beats the ledger
                for key, (step, _) in (latest or {}).items():
                    if step > self._prior.get(key, -math.inf):
                        self._prior[key] = float(step)
        except Exception as exc:
            self._failed(exc, "opening the run")
            return False
        self._opened = True
        if identity and identity != self.identity:
            self.identity.update(identity)
            self.meta["identity"] = dict(self.identity)
            try:
                write_text_atomic(
                    self.directory / META_FILE, json.dumps(self.meta, indent=2, sort_keys=True, default=str)
                )
            except OSError as exc:
                log.warning("%s: cannot write %s: %s", self.label, META_FILE, describe(exc))
        return True

    def _drain(self) -> None:
        # Buffered records join the spool first, so one pass sends everything in sequence
        # order (they are newer than anything spooled: ``submit`` spills the whole buffer).
        with self._cv:
            moved = list(self._buf)
            self._buf.clear()
            if moved:
                self._popped = max(self._popped, moved[-1].seq)
        if moved:
            self._to_spool(moved)
            with self._cv:
                self._done = max(self._done, moved[-1].seq)
                self._cv.notify_all()
        if self.write_ahead:
            self._drain_journal()
            return
        records, highest, size = self.spool.pending()
        if not records:
            self.spool.write_ack(highest)
            self.spool.truncate_if_unchanged(size)
            return
        records = self._open_and_reconcile(records)
        if records is None:
            return
        remaining = self._deliver(records, from_spool=True)
        if remaining:
            return
        self.spool.write_ack(highest)
        if self.spool.truncate_if_unchanged(size):
            self._recovered()

    def _drain_journal(self) -> None:
        """Write-ahead backends: send what the journal holds past the last record sent."""
        raw, offset = self.spool.read(self._offset)
        records = Spool.ordered(raw, max(self.spool.ack(), self._sent))
        if records:
            records = self._open_and_reconcile(records)
            if records is None:
                return
            if self._deliver(records, from_spool=True):
                return  # failed: read again from the same place next time
        if raw:
            self._sent = max(self._sent, max(r.seq for r in raw))  # rewinds and skipped ones too
        self._offset = offset
        confirmed = self._confirmed
        if confirmed is not None and confirmed >= self._sent:
            # The run ended (wandb finished, its log is complete): the journal is done with.
            self.spool.write_ack(self._sent)
            if self.spool.truncate_if_unchanged(offset):
                self._offset = 0
            self._confirmed = None
        if self._outage_since is not None and not self._backlog():
            self._recovered()

    def _open_and_reconcile(self, records: List[Record]) -> Optional[List[Record]]:
        """The records still to send once the run is open, less those an earlier call that
        failed mid-way did deliver; None when the backend cannot be reached (try later)."""
        if not self._ensure_open():
            return None
        if self._reconcile:
            try:
                latest = self._sink.latest_metrics()
            except Exception as exc:
                self._failed(exc, "checking what arrived")
                return None
            self._reconcile = False
            if latest is not None:
                records = self._skip_landed(records, latest)
        return records

    def _deliver(self, records: List[Record], from_spool: bool) -> List[Record]:
        """Send in order; return the records not delivered because the backend failed."""
        kept = self._filter(records)
        if not kept:
            if records and from_spool:
                self.spool.write_ack(records[-1].seq)
            return []
        chunks = list(self._sink.chunks(kept))
        for i, chunk in enumerate(chunks):
            try:
                self._send(chunk)
            except _Transient as failure:
                self._failed(failure.exc, "sending")
                self._reconcile = True  # the call may have arrived before it failed
                return [r for c in chunks[i:] for r in c]
            self._delivered(chunk, from_spool)
        if self._outage_since is not None and not self._backlog():
            self._recovered()
        if from_spool and records and not self.write_ahead:
            self.spool.write_ack(records[-1].seq)
        return []

    def _send(self, chunk: List[Record]) -> None:
        try:
            self._sink.send(chunk)
            return
        except Exception as exc:
            if not self._sink.is_permanent(exc):
                raise _Transient(exc) from exc
            error = exc
        if len(chunk) > 1:
            for record in chunk:  # find the refused record(s); deliver the others
                self._send([record])
            return
        self._reject(chunk[0], error)

    def _reject(self, record: Record, exc: BaseException) -> None:
        self.stats["rejected"] += 1
        line = json.dumps({"error": describe(exc), "record": json.loads(record.to_line())}, default=str) + "\n"
        try:
            with open(self.directory / REJECTED_FILE, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass
        log.warning("%s refused a %s record (kept in %s): %s", self.label, record.kind, REJECTED_FILE, describe(exc))

    def _delivered(self, chunk: List[Record], from_spool: bool) -> None:
        self.stats["delivered"] += len(chunk)
        for record in chunk:
            if record.kind == METRICS and record.step is not None:
                older = self._dedup_gen is not None and record.gen < self._dedup_gen
                for key in record.data:
                    if record.step > self._hw.get(key, -math.inf):
                        self._hw[key] = record.step
                        self._hw_dirty = True
                    if older and record.step > self._prior.get(key, -math.inf):
                        self._prior[key] = record.step
        last = chunk[-1].seq
        self._delivered_seq = last
        if self.write_ahead:
            self._sent = max(self._sent, last)
            if any(r.kind == END for r in chunk):
                self._confirmed = last
            return
        with self._cv:
            spooled = self._inflight_spooled
        if from_spool or spooled or self.spool.dirty:
            self.spool.write_ack(last)

    def _filter(self, records: List[Record]) -> List[Record]:
        """A resumed run sends no metric value at a step that an earlier process of the run
        already delivered (or is about to, from the spool): at most one value per metric and
        step across processes. Its own records are never compared with each other (the
        Trainer logs ``epoch`` twice at a validation step, and that stays so)."""
        if self._dedup_gen is None:
            return records
        rewinds = self._sink is not None and self._sink.rewinds_on_resume
        cap = self.resume_step if (rewinds and self.resume_step is not None) else math.inf
        view = dict(self._prior)
        out = []
        for record in records:
            if record.kind != METRICS or record.step is None:
                out.append(record)
                continue
            if record.gen < self._dedup_gen:  # sent before this process's own records
                out.append(record)
                for key in record.data:
                    view[key] = max(view.get(key, -math.inf), record.step)
                continue
            data = {k: v for k, v in record.data.items() if record.step > min(view.get(k, -math.inf), cap)}
            self.stats["skipped"] += len(record.data) - len(data)
            if data:
                out.append(record if len(data) == len(record.data) else record.with_data(data))
        return out

    def _skip_landed(self, records: List[Record], latest: Dict[str, Tuple[float, int]]) -> List[Record]:
        """Drop the leading metric records that the backend already holds: a call that failed
        mid-way (or a process that died mid-call) may have delivered them. Only a prefix can
        have arrived, since records are sent in order (assumes a metric's steps never go back)."""
        out: List[Record] = []
        checking = True
        for record in records:
            if checking and record.kind == METRICS and record.step is not None:
                mark = (record.step, record.ts)
                if all(tuple(latest.get(k, (-math.inf, -1))) >= mark for k in record.data):
                    self.stats["already_there"] += 1
                    self._delivered([record], from_spool=True)
                    continue
                checking = False
            out.append(record)
        return out

    def _save_ledger(self) -> None:
        if not self._hw_dirty:
            return
        try:
            write_text_atomic(self.directory / LEDGER_FILE, json.dumps(self._hw, sort_keys=True))
            self._hw_dirty = False
        except OSError as exc:
            log.warning("%s: cannot write %s: %s", self.label, LEDGER_FILE, describe(exc))

    def _close_sink(self) -> None:
        if self._sink is not None:
            try:
                self._sink.close()
            except Exception as exc:
                log.warning("%s: closing the client failed: %s", self.label, describe(exc))

    def _failed(self, exc: BaseException, doing: str) -> None:
        self.stats["failures"] += 1
        self.last_error = f"{doing}: {describe(exc)}"
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._backoff = self.options.retry_initial
        else:
            self._backoff = min(self.options.retry_max, self._backoff * 2)
        self._next_try = now + self._backoff * random.uniform(0.8, 1.2)
        if not self._warned_outage:
            self._warned_outage = True
            warnings.warn(
                f"{self.label} is not answering ({self.last_error}); training goes on, records are kept in "
                f"{self.spool.path} and sent when it answers again",
                FulmenLoggerWarning,
                stacklevel=2,
            )

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.info("%s answers again after %.1f s", self.label, time.monotonic() - self._outage_since)
        self._outage_since = None
        self._warned_outage = False
        self._backoff = self.options.retry_initial
        self._next_try = 0.0

    # ------------------------------------------------------------------ directory lock
    def _lock_directory(self) -> None:
        """Keep ``fulmen loggers replay`` from draining the spool while this process does."""
        try:
            self._lock_fd = try_lock(self.directory, wait=30.0)
        except OSError:
            return
        if self._lock_fd is None:
            log.warning("%s: %s stays locked by another process; going on", self.label, self.directory)

    def _unlock_directory(self) -> None:
        if self._lock_fd is not None:
            unlock(self._lock_fd)
            self._lock_fd = None


class _Transient(Exception):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(describe(exc))
        self.exc = exc
