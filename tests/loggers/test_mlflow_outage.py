"""The MLflow server goes away in the middle of training: no step waits for it, records spool
to disk, and when it is back (during training, or after the job through ``fulmen loggers
replay``) every logged step of every metric is there exactly once, in the same run."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402
from logger_helpers import MlflowServer, RecordingLogger, StepClock, metric_steps  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from test_mlflow_logger import assert_same_history  # noqa: E402

from fulmen_loggers import MLflowLogger  # noqa: E402
from fulmen_loggers._records import FulmenLoggerWarning  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("outage_server"))
    yield server
    server.stop()


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_server_down_mid_training_blocks_no_step_and_loses_nothing(outage_server, tmp_path):
    server = outage_server
    if not server.answers():
        server.start()
    logger = MLflowLogger(
        experiment_name="outage",
        tracking_uri=server.uri,
        save_dir=tmp_path,
        retry_initial=0.2,
        retry_max=1.0,
        flush_interval=0.05,
        close_timeout=60,
    )
    reference = RecordingLogger()
    clock = StepClock(sleep=0.004)
    trainer = quiet_trainer(
        tmp_path,
        logger=[logger, reference],
        max_steps=200_000,
        max_epochs=100_000,
        log_every_n_steps=1,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        callbacks=[clock],
    )
    timeline = {}
    failure = []

    def orchestrate():
        try:
            _wait(lambda: len(clock.durations) >= 60 and logger.run_id, 60, "the run to start")
            _wait(lambda: logger.dispatcher.stats["delivered"] >= 50, 60, "deliveries")
            clock.tag = "down"
            timeline["stop"] = time.monotonic()
            server.stop()  # SIGTERM to its process group, possibly mid-request
            timeline["stopped"] = time.monotonic()
            _wait(lambda: logger.dispatcher.stats["spooled"] >= 200, 60, "records to spool")
            timeline["restart"] = time.monotonic()
            server.start()  # same store, same port
            clock.tag = "back"
            timeline["restarted"] = time.monotonic()
            _wait(lambda: not logger.dispatcher.spool.dirty, 60, "the spool to drain")
            timeline["drained"] = time.monotonic()
            n = len(clock.durations)
            _wait(lambda: len(clock.durations) >= n + 50, 60, "more steps")
        except BaseException as exc:  # stop training and fail the test with the reason
            failure.append(exc)
        finally:
            clock.stop_requested = True

    thread = threading.Thread(target=orchestrate, daemon=True)
    thread.start()
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(BoringModule(), loader(), loader())
    fit_seconds = time.monotonic() - t0
    thread.join(30)
    assert not failure, failure
    assert logger.remaining == 0

    # Nothing lost, nothing doubled, one run.
    client = MlflowClient(server.uri)
    assert_same_history(client, logger.run_id, reference)
    logged = reference.steps("train_loss")
    assert metric_steps(client, logger.run_id, "train_loss") == logged == list(range(1, len(logged) + 1))
    assert client.get_run(logger.run_id).data.params == {"features": "8", "lr": "0.05"}
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert any("MLflow is not answering" in str(w.message) for w in caught)

    # No step waited on the network: the slowest step while the server was gone is nowhere
    # near an HTTP timeout (10 s here, ~247 s with MLflow's defaults).
    up = [d for _, d, tag in clock.durations if tag == "up"]
    down = [d for _, d, tag in clock.durations if tag == "down"]
    back = [d for _, d, tag in clock.durations if tag == "back"]
    report = {
        "steps": len(clock.durations),
        "steps_while_down": len(down),
        "fit_s": round(fit_seconds, 2),
        "server_down_s": round(timeline["restarted"] - timeline["stop"], 2),
        "drain_after_restart_s": round(timeline["drained"] - timeline["restarted"], 2),
        "median_step_ms": {
            k: round(statistics.median(v) * 1000, 2) for k, v in (("up", up), ("down", down), ("back", back))
        },
        "max_step_ms": {k: round(max(v) * 1000, 2) for k, v in (("up", up), ("down", down), ("back", back))},
    }
    slowest = max(range(len(clock.durations)), key=lambda i: clock.durations[i][1])
    end = clock.ends[slowest]
    report["slowest_step"] = {
        "ms": round(clock.durations[slowest][1] * 1000, 2), "tag": clock.durations[slowest][2],
        "s_after_stop_began": round(end - timeline["stop"], 2),
        "s_after_restart_began": round(end - timeline["restart"], 2),
    }
    print("\nOUTAGE", json.dumps(report))
    (tmp_path / "outage_report.json").write_text(json.dumps(report))
    assert len(down) >= 200
    assert max(down) < 2.0, report
    assert statistics.median(down) < 3 * statistics.median(up) + 0.005, report


def test_server_down_at_the_end_then_fulmen_loggers_replay(outage_server, tmp_path):
    server = outage_server
    if not server.answers():
        server.start()
    logger = MLflowLogger(
        experiment_name="replay",
        tracking_uri=server.uri,
        save_dir=tmp_path,
        retry_initial=0.2,
        retry_max=0.5,
        flush_interval=0.05,
        close_timeout=1.0,
    )
    reference = RecordingLogger()

    class StopServer(StepClock):
        def on_train_batch_end(self, trainer):
            if trainer.global_step == 12:
                logger.wait_delivered(20)
                server.stop()

    trainer = quiet_trainer(
        tmp_path, logger=[logger, reference], max_epochs=4, log_every_n_steps=1, callbacks=[StopServer()]
    )
    with pytest.warns(FulmenLoggerWarning, match=r"could not be delivered.*fulmen loggers replay"):
        trainer.fit(BoringModule(), loader(), loader())
    run_id = logger.run_id
    assert logger.remaining > 20
    server.start()
    proc = subprocess.run(
        [str(BIN / "fulmen"), "loggers", "replay", str(tmp_path), "--json"], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["status"] == "delivered" and result["remaining"] == 0
    client = MlflowClient(server.uri)
    assert_same_history(client, run_id, reference)
    assert metric_steps(client, run_id, "train_loss") == list(range(1, 33))
    assert client.get_run(run_id).info.status == "FINISHED"  # the spooled end of the run, replayed


def test_a_silent_server_costs_seconds_not_minutes(tmp_path):
    """A port that accepts connections and never answers (a hung server or a black hole):
    the delivery thread's calls time out after ``http_timeout``, records stay on disk."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        logger = MLflowLogger(
            experiment_name="silent",
            tracking_uri=f"http://127.0.0.1:{port}",
            save_dir=tmp_path,
            http_timeout=1,
            close_timeout=2.0,
            retry_initial=0.2,
        )
        t0 = time.monotonic()
        for step in range(1, 51):
            logger.log_metrics({"loss": 1.0 / step}, step=step)
        submit_seconds = time.monotonic() - t0
        with pytest.warns(FulmenLoggerWarning, match=r"51 record\(s\) could not be delivered.*ReadTimeout"):
            logger.finalize("failed")
        total = time.monotonic() - t0
    assert submit_seconds < 1.0
    assert total < 15, total
    assert logger.remaining == 51  # the metrics and the run's end, kept for later
