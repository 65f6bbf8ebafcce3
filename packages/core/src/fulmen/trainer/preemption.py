"""Turning SIGTERM/SIGUSR1 into "finish this step, save, exit (and requeue)".

Schedulers announce the end of a job with a signal: Kubernetes and most launchers send
SIGTERM, SLURM sends what ``--signal=USR1@90`` asks for. The handler only records the
signal; the Trainer acts at the next batch boundary, where the state is consistent.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry".
PREEMPTED_EXIT_CODE = 75
PREEMPTION_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


# Several processes agree on a signal with a collective (and a host-device sync). Doing it
# every step would cost a sync per step; doing it at logging intervals could take longer
# than the grace period a scheduler gives (50 steps of 2 s against Kubernetes' 30 s). The
# ranks instead agree about once per AGREE_EVERY_S of wall time, on an interval in batches
# they settle together at each agreement (so they all call the collective at the same batch).
AGREE_EVERY_S = 1.0
MAX_AGREEMENT_INTERVAL = 100_000


class PreemptionHandler:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self.reset_schedule()

    def reset_schedule(self) -> None:
        """Every rank starts a fit agreeing at its first batch boundary."""
        self.next_agreement = 0
        self.last_agreement: Optional[Tuple[float, int]] = None  # (monotonic time, total batches)

    def proposed_interval(self, now: float, batches: int) -> int:
        """How many batches take about AGREE_EVERY_S here, from the time since the last agreement."""
        if self.last_agreement is None:
            return 1
        then, batches_then = self.last_agreement
        if batches <= batches_then or now <= then:
            return 1
        per_batch = (now - then) / (batches - batches_then)
        return max(1, min(MAX_AGREEMENT_INTERVAL, int(AGREE_EVERY_S / per_batch)))

    def install(self) -> None:
        self.reset_schedule()
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        from fulmen.strategies.launchers.guards import forward_signal

        self.received = signum
        forward_signal(signum)  # ranks that fulmen started learn of it too

    @property
    def requested(self) -> bool:
        return self.received is not None

    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


class Preempted(Exception):
    """Raised inside the loop after the preemption checkpoint is on disk."""

    def __init__(self, signal_name: str, checkpoint_path: str) -> None:
        super().__init__(f"{signal_name} received; saved {checkpoint_path}")
        self.signal_name = signal_name
        self.checkpoint_path = checkpoint_path


@contextlib.contextmanager
def handling(trainer) -> Iterator[None]:
    handler = trainer._preemption
    handler.received = None
    handler.install()
    try:
        yield
    finally:
        handler.uninstall()


def checkpoint_path(trainer) -> str:
    """Where ``ckpt_path="last"`` will look first: the checkpoint callback's ``last.ckpt``."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        path = Path(callback.dirpath) / "last.ckpt"
        callback.last_model_path = str(path)
        return str(path)
    return str(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")


def check(trainer) -> None:
    """At a batch boundary: if a preemption signal arrived, save and leave the loop."""
    handler = trainer._preemption
    if trainer.world_size > 1:
        # Every rank must stop at the same batch or the next collective hangs.
        batches = trainer._progress.total_batches
        if batches < handler.next_agreement:
            return
        import torch

        now = time.monotonic()
        # One collective settles both: the signal (max over ranks) and the next interval
        # (the smallest proposal, i.e. the slowest rank's; negated so that max finds it).
        proposal = handler.proposed_interval(now, batches)
        both = torch.tensor([float(handler.received or 0), -float(proposal)], device=trainer.strategy.root_device)
        agreed = trainer.strategy.all_reduce(both, "max").tolist()
        signum, interval = int(agreed[0]), max(1, int(-agreed[1]))
        handler.next_agreement = batches + interval
        handler.last_agreement = (time.monotonic(), batches)
        if signum and handler.received is None:
            handler.received = signum
    if not handler.requested:
        return
    path = checkpoint_path(trainer)
    trainer.save_checkpoint(path)
    trainer.strategy.checkpoint_io.teardown()  # durable before we announce it
    raise Preempted(handler.signal_name(), path)


def exit_after_preemption(trainer, exc: Preempted) -> None:
    note = requeue(trainer) if trainer.is_global_zero else None
    trainer.print(
        f"fulmen: {exc.signal_name} received at epoch {trainer.current_epoch}, step {trainer.global_step}; "
        f"saved {exc.checkpoint_path}. Resume with ckpt_path='last'." + (f" {note}." if note else "")
    )
    raise SystemExit(PREEMPTED_EXIT_CODE)


def requeue(trainer) -> Optional[str]:
    """Ask the job's scheduler to run it again. The cluster environment knows its scheduler
    (SLURM requeues; torchrun has none); a process that a batch script started directly runs
    under the local environment, so the registered environments are asked whether this is
    one of their scheduled jobs too."""
    environment = trainer.strategy.cluster_environment
    ask = getattr(environment, "requeue", None)  # duck-typed environments may lack it
    note = ask() if callable(ask) else None
    if note is not None:
        return note
    for entry in trainer.fabric.registry.entries("environment"):
        factory = entry.factory
        if isinstance(environment, factory) if isinstance(factory, type) else False:
            continue  # asked already
        scheduled = getattr(factory, "scheduled_job", None)
        if callable(scheduled) and scheduled():
            return factory().requeue()
    return None
