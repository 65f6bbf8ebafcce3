"""The server created the run but its reply never arrived (a timeout, a proxy that dropped the
connection): retrying must continue that run, not create a second one with part of the
metrics. A forwarding proxy on 127.0.0.1 passes every call to a real ``mlflow server`` and
drops the reply to the first ``runs/create`` after the server has acted on it."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

pytest.importorskip("mlflow")

from helpers import BoringModule, loader, quiet_trainer  # noqa: E402
from logger_helpers import RecordingLogger  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from test_mlflow_logger import FAST, assert_same_history  # noqa: E402

from fulmen_loggers import MLflowLogger  # noqa: E402
from fulmen_loggers.mlflow_logger import RUN_KEY_TAG  # noqa: E402


class ReplyDroppingProxy:
    """Forwards HTTP calls to ``upstream``; the first call whose path ends with ``drop_suffix``
    reaches the server, and the client's connection is then closed without a reply."""

    def __init__(self, upstream: str, drop_suffix: str) -> None:
        target = urlparse(upstream)
        self.dropped = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                payload = response.read()
                upstream_conn.close()
                if self.path.split("?")[0].endswith(drop_suffix) and not proxy.dropped:
                    proxy.dropped.append(self.path)
                    self.close_connection = True  # the server acted; the client hears nothing
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_lost_create_reply_continues_the_run_it_made(mlflow_server, tmp_path):
    proxy = ReplyDroppingProxy(mlflow_server.uri, "/runs/create")
    try:
        logger = MLflowLogger(experiment_name="lost-reply", tracking_uri=proxy.uri, save_dir=tmp_path, **FAST)
        reference = RecordingLogger()
        trainer = quiet_trainer(tmp_path, logger=[logger, reference], max_epochs=2, log_every_n_steps=1)
        with pytest.warns(Warning, match="not answering"):
            trainer.fit(BoringModule(), loader(), loader())
        assert proxy.dropped, "the proxy never saw runs/create"
        assert logger.remaining == 0 and logger.run_id
    finally:
        proxy.stop()

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("lost-reply")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [logger.run_id]  # one run, not an orphan and a second
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[RUN_KEY_TAG]
    assert_same_history(client, logger.run_id, reference)


def test_resume_elsewhere_before_the_run_id_was_known_finds_the_run(mlflow_server, tmp_path):
    """The checkpoint's logger state carries the run key: a job that died before learning the
    run id (its create reply lost) and resumes in another directory continues that run."""
    first = MLflowLogger(experiment_name="moved", tracking_uri=mlflow_server.uri, save_dir=tmp_path / "a", **FAST)
    first.log_metrics({"loss": 1.0}, step=1)
    first.finalize("success")
    state = first.state_dict()
    assert state["identity"]["run_key"] and state["identity"]["run_id"] == first.run_id
    del state["identity"]["run_id"]  # as if the create reply had never arrived

    second = MLflowLogger(experiment_name="moved", tracking_uri=mlflow_server.uri, save_dir=tmp_path / "b", **FAST)
    second.load_state_dict(state)
    second.log_metrics({"loss": 0.5}, step=2)
    second.finalize("success")
    assert second.run_id == first.run_id

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("moved")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [first.run_id]
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [(1, 1.0), (2, 0.5)]
