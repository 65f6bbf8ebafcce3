"""``strategy="ddp"``: re-run the user's command once per extra local rank, like torchrun.

The command that started this process runs again for local ranks 1..n-1 with fulmen's
environment variables set; each copy builds the same Trainer and joins the process group.
This process becomes local rank 0 and watches the others: when one fails or is killed, the
job ends at once with that rank's error, instead of hanging in a collective.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Tuple

from fulmen.errors import FulmenConfigError
from fulmen.strategies.launchers import guards

PREEMPTED_EXIT_CODE = 75  # a rank that saved and left on a preemption signal did not fail
# How long a failing rank 0 waits for the rank whose failure it echoes to report.
REPORT_GRACE_SECONDS = 3.0


def script_command() -> List[str]:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return [sys.executable, "-m", spec.name] + sys.argv[1:]
    script = getattr(main, "__file__", None)
    if not script or sys.argv[0] in ("", "-c"):
        raise FulmenConfigError(
            "strategy='ddp' starts the other processes by re-running your command, but this process "
            "has no script (interactive shell, notebook or python -c); use strategy='ddp_spawn' or "
            "'ddp_fork', or launch the script with torchrun"
        )
    return [sys.executable, os.path.abspath(script)] + sys.argv[1:]


class SubprocessScriptLauncher:
    starts_in_place = True  # this process continues as local rank 0

    def __init__(self, strategy) -> None:
        self.strategy = strategy
        self.children: List[Tuple[int, subprocess.Popen]] = []
        self._done = threading.Event()
        self._error_dir = ""

    def start_other_processes(self) -> None:
        nproc = self.strategy.num_processes
        num_nodes = self.strategy.num_nodes
        node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
        port = os.environ.get("MASTER_PORT")
        if not port:
            if num_nodes > 1:
                raise FulmenConfigError(
                    f"num_nodes={num_nodes}: every node must agree on the rendezvous; set MASTER_ADDR, "
                    "MASTER_PORT and NODE_RANK on each node (or launch with torchrun/srun)"
                )
            port = str(guards.free_port())
        self._error_dir = tempfile.mkdtemp(prefix="fulmen-ranks-")
        shared = {
            "FULMEN_LAUNCHED": "1",
            "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
            "MASTER_PORT": port,
            "WORLD_SIZE": str(nproc * num_nodes),
            "NODE_RANK": str(node_rank),
            guards.ENV_ERROR_DIR: self._error_dir,
            guards.ENV_PARENT_PID: str(os.getpid()),
        }
        os.environ.update(shared, LOCAL_RANK="0", RANK=str(node_rank * nproc))
        command = script_command()
        for local_rank in range(1, nproc):
            env = {**os.environ, "LOCAL_RANK": str(local_rank), "RANK": str(node_rank * nproc + local_rank)}
            process = subprocess.Popen(command, env=env, start_new_session=False)
            self.children.append((node_rank * nproc + local_rank, process))
        threading.Thread(target=self._watch, name="fulmen-rank-watch", daemon=True).start()
        atexit.register(self._at_exit)
        guards.ACTIVE_LAUNCHERS.append(self)
        self._forward_signals()

    def forward(self, signum: int) -> None:
        for _, process in self.children:
            if process.poll() is None:
                process.send_signal(signum)

    def _forward_signals(self) -> None:
        """SIGTERM/SIGUSR1 reach only this process when fulmen launched the others; pass
        them on (during fit the preemption handler does the same through ``ACTIVE``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is None:
                continue
            previous = signal.getsignal(sig)

            def forward_then_default(signum, frame, previous=previous):
                self.forward(signum)
                if callable(previous):
                    previous(signum, frame)
                else:
                    raise SystemExit(128 + signum)

            signal.signal(sig, forward_then_default)

    def _watch(self) -> None:
        while not self._done.is_set():
            for rank, process in self.children:
                code = process.poll()
                if code is not None and code not in (0, PREEMPTED_EXIT_CODE):
                    self._abort(guards.describe_failure(self._error_dir, rank, code))
            time.sleep(0.2)

    def _abort(self, reason: str) -> None:
        sys.stderr.write(f"\nfulmen: {reason}; stopping the job\n")
        sys.stderr.flush()
        self._kill_children()
        os._exit(1)

    def _kill_children(self, grace: float = 3.0) -> None:
        for _, process in self.children:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace
        for _, process in self.children:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.wait(remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _at_exit(self) -> None:
        failed_here = hasattr(sys, "last_value") or hasattr(sys, "last_exc")
        if failed_here:
            # Often this rank's error is only the echo of another rank's (a closed
            # connection): give the others a moment to report, then name the real cause.
            self._done.set()
            causes = self._wait_for_causes(REPORT_GRACE_SECONDS)
            self._kill_children()
            if causes:
                sys.stderr.write(f"\nfulmen: {'; '.join(causes)}; the error above on rank 0 followed from it\n")
            return
        # Rank 0 finished: the others finish too, unless one is stuck or failing.
        deadline = time.monotonic() + self.strategy.timeout.total_seconds()
        for rank, process in self.children:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._abort(f"rank {rank} did not finish within the timeout after rank 0 did")
        self._done.set()
        for rank, process in self.children:
            if process.returncode not in (0, PREEMPTED_EXIT_CODE):
                self._abort(guards.describe_failure(self._error_dir, rank, process.returncode))

    def _wait_for_causes(self, grace: float) -> List[str]:
        """The other ranks' failures, waiting up to ``grace`` seconds for them to show.

        A rank that raised records its exception before its interpreter shuts down, and a
        loaded machine can take seconds over that shutdown; so a recorded exception counts
        even while its process still runs, and a bare exit code only once it has exited.
        """
        deadline = time.monotonic() + grace
        while True:
            causes = [
                guards.describe_failure(self._error_dir, rank, process.poll() or 0)
                for rank, process in self.children
                if guards.error_file(self._error_dir, rank).exists() or process.poll() not in (None, 0)
            ]
            everyone_exited = all(process.poll() is not None for _, process in self.children)
            if causes or everyone_exited or time.monotonic() >= deadline:
                return causes
            time.sleep(0.1)

    def teardown(self) -> None:
        pass
