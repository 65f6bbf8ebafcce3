"""What a backend implements to be driven by the delivery engine, and how a logger tunes
the engine (queue size, batching, retry backoff, how long closing may wait)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from fulmen_loggers._records import METRICS, PARAMS, Record


class Sink:
    """One backend run, driven only by the delivery thread (or by ``fulmen loggers replay``).

    ``open`` creates or continues the run and returns what identifies it (for example
    ``{"run_id": ...}``), which is stored in ``meta.json`` so that a resumed run and the
    replay command continue the same backend run. ``send`` delivers one chunk as produced by
    ``chunks`` and raises if any of it may not have arrived.
    """

    label = "backend"
    # The backend itself drops what a crashed process logged after the resume step (TensorBoard's
    # purge_step); values at or before it are still deduplicated.
    rewinds_on_resume = False

    def open(self, resume_step: Optional[int]) -> Dict[str, Any]:
        """Create or continue the backend run and return what identifies it. Runs on the delivery
        thread, again after a failure; ``resume_step`` is set when a checkpoint resumed the run."""
        return {}

    # Metrics and parameters records sent together, up to this many a call, for a backend
    # whose client only queues them locally (ClearML, Comet, W&B); an artifact and the run's
    # end still go alone. None: one record a call.
    batch_limit: Optional[int] = None

    def chunks(self, records: List[Record]) -> Iterator[List[Record]]:
        """The records grouped into backend calls, in order (one ``send`` each): runs of metrics
        and parameters records of up to ``batch_limit``, everything else alone."""
        if self.batch_limit is None:
            for record in records:
                yield [record]
            return
        chunk: List[Record] = []
        for record in records:
            if record.kind in (METRICS, PARAMS):
                chunk.append(record)
                if len(chunk) >= self.batch_limit:
                    yield chunk
                    chunk = []
                continue
            if chunk:
                yield chunk
                chunk = []
            yield [record]
        if chunk:
            yield chunk

    def send(self, chunk: List[Record]) -> None:
        """Deliver one chunk; raise if any of it may not have arrived: it is retried, or kept in
        ``rejected.jsonl`` when :meth:`is_permanent` says retrying cannot help."""
        raise NotImplementedError

    def latest_metrics(self) -> Optional[Dict[str, Tuple[float, int]]]:
        """Per metric name, the (step, timestamp in ms) of the latest value the backend holds,
        or None if it cannot say. Used after a call whose outcome is unknown (a timeout, a
        process that died mid-call) to skip what did arrive, and when a run resumes."""
        return None

    def is_permanent(self, exc: BaseException) -> bool:
        """True when retrying ``exc`` cannot help (the backend refused the values)."""
        return False

    def close(self) -> None:
        """Release the client: the delivery thread ends, or a replay is done."""
        pass


def describe(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters, for warnings and ``last_error``
    (backend errors can carry whole HTML pages or tracebacks)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def load_sink_factory(spec: str) -> Callable[[Dict[str, Any]], Sink]:
    """The ``"module:function"`` a logger names in ``SINK`` (and ``meta.json`` keeps), imported:
    a name rather than the function itself, so that ``fulmen loggers replay`` can rebuild
    the client of a run whose process is gone, and importing a logger imports no backend."""
    import importlib

    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class DeliveryOptions:
    """How a logger talks to its backend (see each logger's docstring for the defaults)."""

    def __init__(
        self,
        queue_size: int = 10_000,
        max_batch: int = 1_000,
        flush_interval: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        close_timeout: float = 30.0,
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be at least 1")
        self.queue_size = int(queue_size)
        self.max_batch = int(max_batch)
        self.flush_interval = max(0.0, float(flush_interval))
        self.retry_initial = max(0.01, float(retry_initial))
        self.retry_max = max(self.retry_initial, float(retry_max))
        self.close_timeout = max(0.0, float(close_timeout))
