"""The delivery engine under the three loggers, against a file-backed tracker whose outages
the tests switch on and off (delivery_doubles.py): order, batching, a hung backend never
blocking ``submit``, spooling and replay, refused records, resume without gaps or doubles.
Needs no tracking library, so it runs in the default test session too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from delivery_doubles import FileBackend, FileBackendLogger, build_sink

from fulmen_loggers._delivery import Dispatcher
from fulmen_loggers._records import METRICS, REJECTED_FILE, FulmenLoggerWarning
from fulmen_loggers._sink import DeliveryOptions, Sink
from fulmen_loggers._spool import Spool
from fulmen_loggers.replay import replay

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "logger_train_script.py"
FAST = dict(retry_initial=0.05, retry_max=0.2, flush_interval=0.02)
FAST_RETRY = dict(retry_initial=0.05, retry_max=0.2)


def dispatcher(tmp_path, backend, **options) -> Dispatcher:
    opts = DeliveryOptions(**{**FAST, "close_timeout": 5.0, **options})
    settings = {
        "backend": "file",
        "label": "FileBackend",
        "sink": "delivery_doubles:build_sink",
        "settings": {"root": str(backend.root)},
    }
    d = Dispatcher(build_sink, tmp_path / "run" / "fulmen-delivery", "FileBackend", opts, settings)
    d.start()
    return d


def steps(backend, key="loss"):
    return backend.metric_steps(key)


def test_records_arrive_once_in_order_and_batched(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    d = dispatcher(tmp_path, backend, max_batch=200)
    for step in range(1, 1001):
        d.submit(METRICS, {"loss": float(step)}, step)
    assert d.close() == 0
    assert steps(backend) == list(range(1, 1001))
    calls = {r["call"] for r in backend.received()}
    assert len(calls) < 1000 / 10  # batched: many records per backend call
    assert not d.spool.dirty and d.stats["spooled"] == 0


def test_a_hung_backend_never_blocks_submit_and_loses_nothing(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    backend.hang()  # every call waits, as on a black-holed server
    d = dispatcher(tmp_path, backend, queue_size=20, max_batch=5)
    slowest = 0.0
    for step in range(1, 501):
        t0 = time.perf_counter()
        d.submit(METRICS, {"loss": float(step)}, step)
        slowest = max(slowest, time.perf_counter() - t0)
    # The buffer took 20, the call in flight a few: the rest went to the spool, not waited for.
    assert d.stats["overflowed"] > 400
    assert slowest < 0.5, slowest  # the backend hangs until released: any bound shows no wait
    assert Spool(d.directory).pending_count() >= 400
    backend.hang(False)
    assert d.close() == 0
    assert steps(backend) == list(range(1, 501))


def test_an_overflow_spills_the_whole_buffer_so_memory_holds_only_newer_records(tmp_path):
    # The drain acknowledges the spool up to its highest sequence number; a record kept in
    # memory while newer ones were spooled would be acknowledged unsent (CI caught 20 steps,
    # one buffer's worth, missing about once in 40 runs of the test above).
    backend = FileBackend(tmp_path / "backend")
    backend.hang()
    d = dispatcher(tmp_path, backend, queue_size=5, max_batch=5)
    d.submit(METRICS, {"loss": 1.0}, 1)
    deadline = time.monotonic() + 10
    while not d._inflight and time.monotonic() < deadline:  # the thread holds step 1, hung
        time.sleep(0.005)
    assert d._inflight
    for step in range(2, 33):
        d.submit(METRICS, {"loss": float(step)}, step)
    spooled = {r.step for r in Spool(d.directory).read()[0]}
    buffered = [r.step for r in d._buf]
    assert spooled and buffered and min(buffered) > max(spooled), (sorted(spooled), buffered)
    assert spooled | set(buffered) == set(range(2, 33))
    backend.hang(False)
    assert d.close() == 0
    assert steps(backend) == list(range(1, 33))


def test_a_record_persisted_while_being_sent_is_not_sent_again(tmp_path, monkeypatch):
    # persist() (the logger's save() before a checkpoint) copies the batch in flight to the
    # spool; the copy must be acknowledged before the next drain reads the spool.
    backend = FileBackend(tmp_path / "backend")
    d = dispatcher(tmp_path, backend, max_batch=5)
    sent, resume = threading.Event(), threading.Event()
    original = Dispatcher._delivered

    def delivered_then_pause(self, chunk, from_spool):
        original(self, chunk, from_spool)
        if not from_spool and not sent.is_set():
            sent.set()
            resume.wait(5)

    monkeypatch.setattr(Dispatcher, "_delivered", delivered_then_pause)
    for step in (1, 2, 3):
        d.submit(METRICS, {"loss": float(step)}, step)
    d.request_flush()
    assert sent.wait(5)
    d.persist()  # the batch was delivered, but the thread has not settled it yet
    resume.set()
    assert d.close() == 0
    assert steps(backend) == [1, 2, 3]


def test_two_logging_threads_lose_nothing_when_one_spills(tmp_path, monkeypatch):
    # Thread A overflows the buffer and spills it. Were thread B's newer record sent, and
    # acknowledged in the spool, before A's spilled records were written there, those would
    # count as delivered. Each side waits for the other where the race would bite.
    got, b_sending, a_written = [], threading.Event(), threading.Event()

    class Recorder(Sink):
        def send(self, chunk):
            for record in chunk:
                if record.step == 100:
                    b_sending.set()
                    a_written.wait(5)
                got.append(record.step)

    started = threading.Event()
    original_take = Dispatcher._take

    def take_when_started(self):
        started.wait(5)  # the delivery thread takes nothing until the buffer is full
        return original_take(self)

    original_append = Spool.append

    def spill_after_b(self, records):
        records = list(records)
        if threading.current_thread().name != "A":
            return original_append(self, records)
        other.start()
        b_sending.wait(1.0)  # never set while A's spill holds the buffer's lock
        written = original_append(self, records)
        a_written.set()
        return written

    monkeypatch.setattr(Dispatcher, "_take", take_when_started)
    monkeypatch.setattr(Spool, "append", spill_after_b)
    options = DeliveryOptions(queue_size=3, max_batch=1, flush_interval=0.0, close_timeout=5.0, **FAST_RETRY)
    d = Dispatcher(lambda meta: Recorder(), tmp_path / "delivery", "Recorder", options, {})
    d.start()

    def thread_a():
        for step in range(1, 5):  # the 4th overflows a queue of 3
            d.submit(METRICS, {"loss": float(step)}, step)

    def thread_b():
        started.set()
        d.submit(METRICS, {"loss": 100.0}, 100)

    other = threading.Thread(target=thread_b, name="B")
    first = threading.Thread(target=thread_a, name="A")
    first.start()
    first.join(10)
    other.join(10)
    assert d.close() == 0
    assert sorted(got) == [1, 2, 3, 4, 100]


def test_outage_spools_in_order_and_replays_when_the_backend_returns(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    d = dispatcher(tmp_path, backend)
    for step in range(1, 11):
        d.submit(METRICS, {"loss": float(step)}, step)
    assert d.wait_delivered(5)
    backend.down()
    with pytest.warns(FulmenLoggerWarning, match="FileBackend is not answering.*Connection refused.*spool.jsonl"):
        for step in range(11, 61):
            d.submit(METRICS, {"loss": float(step)}, step)
            time.sleep(0.002)
        deadline = time.monotonic() + 5
        while d.stats["spooled"] < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert d.stats["spooled"] >= 50
    assert steps(backend) == list(range(1, 11))
    backend.down(False)
    for step in range(61, 71):
        d.submit(METRICS, {"loss": float(step)}, step)
    assert d.wait_delivered(5)
    assert steps(backend) == list(range(1, 71))
    assert d.spool.path.stat().st_size == 0  # emptied once everything was acknowledged
    assert d.close() == 0


def test_close_while_down_reports_the_spool_and_the_replay_command_delivers_it(tmp_path, capsys):
    backend = FileBackend(tmp_path / "backend")
    backend.down()
    d = dispatcher(tmp_path, backend, close_timeout=0.3)
    for step in range(1, 31):
        d.submit(METRICS, {"loss": float(step)}, step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        remaining = d.close()
        waited = time.monotonic() - t0
    assert remaining == 30 and waited < 3
    message = " ".join(str(w.message) for w in caught)
    assert "30 record(s) could not be delivered" in message
    assert str(d.spool.path) in message and f"fulmen loggers replay {d.directory.parent}" in message

    results = replay(tmp_path, timeout=0.5)  # still down: nothing lost, nothing sent
    assert [(r.status, r.remaining) for r in results] == [("incomplete", 30)]
    backend.down(False)
    results = replay(tmp_path / "run", timeout=10)
    assert [(r.status, r.delivered, r.remaining) for r in results] == [("delivered", 30, 0)]
    assert steps(backend) == list(range(1, 31))
    assert [(r.status, r.delivered) for r in replay(tmp_path, timeout=1)] == [("nothing to send", 0)]


def test_refused_records_are_kept_with_the_error_and_do_not_block_the_rest(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    d = dispatcher(tmp_path, backend)
    for step in range(1, 21):
        d.submit(METRICS, {"loss": float(step), **({"poison": 1.0} if step == 7 else {})}, step)
    with pytest.warns(FulmenLoggerWarning, match="refused 1 record"):
        assert d.close() == 0
    assert steps(backend) == [s for s in range(1, 21) if s != 7]
    rejected = [json.loads(line) for line in (d.directory / REJECTED_FILE).read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["record"]["s"] == 7 and "poison" in rejected[0]["error"]


def test_persist_puts_memory_on_disk_and_a_torn_line_is_skipped(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    backend.hang()
    d = dispatcher(tmp_path, backend, flush_interval=10.0)
    for step in range(1, 6):
        d.submit(METRICS, {"loss": float(step)}, step)
    d.persist()  # what ``save()`` does before every checkpoint
    spool = Spool(d.directory)
    assert [r.step for r in spool.pending()[0]] == [1, 2, 3, 4, 5]
    with open(spool.path, "a") as handle:
        handle.write('{"g": 1, "n": 99, "k": "metr')  # a process killed mid-write
    assert [r.step for r in Spool(d.directory).pending()[0]] == [1, 2, 3, 4, 5]
    backend.hang(False)
    assert d.close() == 0
    assert steps(backend) == [1, 2, 3, 4, 5]


def test_logger_save_points_never_wait(tmp_path):
    backend = FileBackend(tmp_path / "backend")
    backend.hang()
    logger = FileBackendLogger(backend.root, save_dir=tmp_path, close_timeout=0.2, **FAST)
    logger.log_hyperparams({"model": {"width": 64, "act": "relu"}, "lr": 0.1, "layers": [64, 64]})
    logger.log_metrics({"loss": 1.0}, step=1)
    t0 = time.perf_counter()
    logger.save()
    logger.log_metrics({"loss": 0.5}, step=2)
    assert time.perf_counter() - t0 < 0.5  # the backend hangs until released
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.finalize("success")  # gives up after close_timeout, keeps the records
    assert logger.remaining == 4  # params, two metrics, end: kept in the spool
    backend.hang(False)
    # The thread that was stuck in the call (this process lives on) or the replay command
    # delivers them: each exactly once either way.
    assert replay(logger.log_dir)[0].status in ("delivered", "nothing to send")
    assert [r["kind"] for r in backend.received()] == ["params", "metrics", "metrics", "end"]
    params = [r for r in backend.received() if r["kind"] == "params"][0]["data"]
    assert params["flat"] == {"model/width": 64, "model/act": "relu", "lr": 0.1, "layers": "[64, 64]"}
    assert params["nested"] == {"model": {"width": 64, "act": "relu"}, "lr": 0.1, "layers": [64, 64]}


def _run_script(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("outage", [False, True], ids=["delivered-after-checkpoint", "spooled-after-checkpoint"])
def test_resume_after_sigkill_has_every_step_once(tmp_path, outage):
    """Checkpoints every 5 steps; the process dies (SIGKILL) at step 13 after logging 11-12
    past the step-10 checkpoint. Either they reached the backend (the resumed run must not
    send them again) or they sat in the spool with 8-10 (the resumed run must send 8-10 and
    drop the dead process's 11-12, which it logs again)."""
    root = tmp_path / "run"
    down = ["--down-from", 8] if outage else []
    first = _run_script("--root", root, "--kill-at", 13, *down)
    assert first.returncode == -9, first.stderr[-3000:]
    backend = FileBackend(root / "backend")
    if outage:
        assert max(steps(backend, "train_loss")) < 8
        assert Spool(root / "filebackend" / "version_0" / "fulmen-delivery").pending_count() > 0
        backend.down(False)
    else:
        assert steps(backend, "train_loss")[-1] >= 11
    second = _run_script("--root", root, "--ckpt", root / "ckpts" / "last.ckpt")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 20 and summary["loggers"][0]["remaining"] == 0
    assert summary["loggers"][0]["version"] == 0  # the same run directory, not version_1
    assert steps(backend, "train_loss") == list(range(1, 21))
    assert steps(backend, "val_loss") == [8, 16]
    assert len([r for r in backend.received() if r["kind"] == "params"]) == 1  # hyperparameters once


def test_a_new_writer_ends_a_dead_writers_torn_line(tmp_path):
    from fulmen_loggers._records import Record

    first = Spool(tmp_path)
    first.append([Record(1, n, METRICS, n, 0, {"loss": 1.0}) for n in (1, 2)])
    first.close()
    with open(first.path, "a") as handle:
        handle.write('{"g": 1, "n": 3, "k": "metr')  # killed mid-write
    second = Spool(tmp_path)  # the resumed process
    second.append([Record(2, 1, METRICS, 3, 0, {"loss": 1.0})])
    assert [r.seq for r in second.pending()[0]] == [(1, 1), (1, 2), (2, 1)]


@pytest.mark.parametrize("mode", ["best", "all", False])
def test_log_model_modes(tmp_path, mode):
    backend = FileBackend(tmp_path / "backend")
    logger = FileBackendLogger(backend.root, save_dir=tmp_path, log_model=mode, **FAST)
    files = []
    for name, aliases in [("a.ckpt", ["latest", "best"]), ("b.ckpt", ["latest", "best"]), ("c.ckpt", ["latest"])]:
        path = tmp_path / name
        path.write_bytes(name.encode())
        files.append(str(path))
        logger.log_checkpoint(str(path), aliases=aliases)
    (tmp_path / "a.ckpt").unlink()  # pruned by ModelCheckpoint before the upload ran
    state = logger.state_dict()
    resumed = FileBackendLogger(backend.root, save_dir=tmp_path, log_model=mode, **FAST)
    resumed.load_state_dict({**state, "step": 3})  # the best file is remembered across a resume
    resumed.finalize("success")
    logger.finalize("success")
    uploads = [(r["data"]["name"], r["data"]["aliases"]) for r in backend.received() if r["kind"] == "artifact"]
    if mode == "best":
        assert uploads == [("b.ckpt", ["best"])] * 2  # once per finalize, from either process
    elif mode == "all":
        assert uploads == [("a.ckpt", ["latest", "best"]), ("b.ckpt", ["latest", "best"]), ("c.ckpt", ["latest"])]
        staged = [r["data"]["staged"] for r in backend.received() if r["kind"] == "artifact"]
        assert all(s and Path(s).name == n for s, (n, _) in zip(staged, uploads))
    else:
        assert uploads == []


def test_a_sink_batch_limit_groups_runs_of_metrics_and_parameters_and_sends_the_rest_alone():
    """ClearML's, Comet's and W&B's sinks share this grouping through ``batch_limit``."""
    from fulmen_loggers._records import ARTIFACT, END, PARAMS, Record
    from fulmen_loggers.clearml_logger import ClearMLSink
    from fulmen_loggers.comet_logger import CometSink
    from fulmen_loggers.wandb_logger import WandbSink

    kinds = [METRICS, PARAMS, METRICS, METRICS, ARTIFACT, METRICS, END]
    records = [Record(0, n, kind, n, 0, {}) for n, kind in enumerate(kinds)]

    class Grouping(Sink):
        batch_limit = 3

    assert [[r.n for r in chunk] for chunk in Grouping().chunks(records)] == [[0, 1, 2], [3], [4], [5], [6]]
    assert [[r.n for r in chunk] for chunk in Sink().chunks(records)] == [[n] for n in range(7)]
    for sink in (ClearMLSink, CometSink, WandbSink):
        assert sink.batch_limit == 1000 and sink.chunks is Sink.chunks
