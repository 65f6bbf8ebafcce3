"""The multi-process scenarios behind the kill-and-resume tests.

Each class runs its scenario when constructed (blocking) and keeps what the tests assert on.
They are real processes at ~2 s each (importing torch), so conftest.py runs them two at a
time in background threads as soon as the first test needs one; each test then waits only
for its own.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any, Dict, List

from ckpt_helpers import (
    FABRIC_SCRIPT,
    TRAIN_SCRIPT,
    TRAINER_ARGS,
    Child,
    child_env,
    kill_after,
    kill_at,
    load_result,
    run_to_end,
)
from fulmen.io import TorchCheckpointIO


def _listing(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir())


class Reference:
    """One uninterrupted run of a script."""

    def __init__(self, directory: Path, script: Path, args: List[Any]) -> None:
        self.root, out = directory / "run", directory / "result.pt"
        self.child = run_to_end(script, [*args, "--root", self.root, "--out", out], timeout=180)
        self.result = load_result(out)


class TrainerKillChain:
    """The Trainer script killed with SIGKILL at four chosen points, resumed with
    ``ckpt_path="last"`` after each, then run to the end: five processes, one directory."""

    POINTS = [
        # mid-epoch between two checkpoints (step 3's is the newest)
        "step:4",
        # right after step 6's checkpoint is on disk, before that batch's log row and the
        # validation due at step 6 ran: the resumed run must do both
        "saved:6",
        # right after the validation that ends epoch 0 and the checkpoint written in it,
        # before the epoch's end (on_train_epoch_end, its log row, the epoch count)
        "val_end:12",
        # halfway through writing a checkpoint (this process writes step 15's, then 18's)
        "midwrite:2",
    ]

    def __init__(self, directory: Path) -> None:
        self.root, out = directory / "run", directory / "result.pt"
        self.checkpoints = self.root / "logs" / "version_0" / "checkpoints"
        args = [*TRAINER_ARGS, "--root", self.root]
        self.children: Dict[str, Child] = {}
        self.after_kill: Dict[str, List[str]] = {}  # the checkpoint folder right after each kill
        for index, point in enumerate(self.POINTS):
            self.children[point] = kill_at(TRAIN_SCRIPT, [*args, "--resume"] if index else args, point)
            self.after_kill[point] = _listing(self.checkpoints)
        self.last_after_midwrite = TorchCheckpointIO().load_checkpoint(self.checkpoints / "last.ckpt")
        self.children["end"] = run_to_end(TRAIN_SCRIPT, [*args, "--resume", "--out", out])
        self.result = load_result(out)


class FabricKillChain:
    """The Fabric script killed halfway through step 10's save (step 5's file is the newest
    whole one), resumed and killed right after step 15's save, resumed to the end."""

    def __init__(self, directory: Path) -> None:
        self.root, out = directory / "run", directory / "result.pt"
        args = ["--root", self.root]
        self.children = {"midwrite:2": kill_at(FABRIC_SCRIPT, args, "midwrite:2")}
        self.after_kill = _listing(self.root)
        self.last_after_midwrite = TorchCheckpointIO().load_checkpoint(self.root / "last.ckpt")
        self.children["saved:15"] = kill_at(FABRIC_SCRIPT, [*args, "--resume"], "saved:15")
        self.children["end"] = run_to_end(FABRIC_SCRIPT, [*args, "--resume", "--out", out])
        self.result = load_result(out)


class RandomKill:
    """Killed at a seeded random time (a random step, then a random delay of up to 60 ms)
    while every save sleeps 50 ms halfway through its write, so that the kill often lands
    inside a save; then resumed to the end."""

    def __init__(self, directory: Path, seed: int = 0) -> None:
        self.root, out = directory / "run", directory / "result.pt"
        args = [*TRAINER_ARGS, "--root", self.root, "--slow-save", "0.05"]
        rng = random.Random(seed)
        self.step, self.delay = rng.randint(2, 24), rng.uniform(0.0, 0.06)
        self.killed = kill_after(TRAIN_SCRIPT, args, self.step, self.delay)
        self.end = run_to_end(TRAIN_SCRIPT, [*args, "--resume", "--out", out])
        self.result = load_result(out)


class AsyncKill:
    """``plugins=[AsyncCheckpointIO(...)]`` whose background thread stops halfway through its
    3rd file; the loop goes on until the next save waits for it; SIGKILL there."""

    def __init__(self, directory: Path) -> None:
        self.root, out = directory / "run", directory / "result.pt"
        args = [*TRAINER_ARGS, "--root", self.root, "--async-save"]
        self.killed = kill_at(TRAIN_SCRIPT, args, "midwrite:3")
        self.after_kill = _listing(self.root / "logs" / "version_0" / "checkpoints")
        self.end = run_to_end(TRAIN_SCRIPT, [*args, "--resume", "--out", out])
        self.result = load_result(out)


SAVED_MESSAGE = re.compile(r"fulmen: (SIG\w+) received at epoch (\d+), step (\d+); saved (\S+)\. Resume with ckpt_path='last'\.")


class Preemption:
    """SIGUSR1 under a fake SLURM job (``SLURM_JOB_ID`` and an ``scontrol`` first on PATH
    that records its arguments) after step 8, then SIGTERM to the resumed run outside SLURM
    after step 18 (its validation still due), then a resume to the end."""

    def __init__(self, directory: Path) -> None:
        fake_bin = directory / "bin"
        fake_bin.mkdir(parents=True)
        self.scontrol_calls = directory / "scontrol_calls.txt"
        scontrol = fake_bin / "scontrol"
        scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{self.scontrol_calls}"\n')
        scontrol.chmod(0o755)
        slurm = child_env(SLURM_JOB_ID="4242", SLURM_JOB_NAME="train", PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
        self.calls_after_first: List[str] = []

        self.root, out = directory / "run", directory / "result.pt"
        args = [*TRAINER_ARGS, "--root", self.root]
        self.first = self._signal(args, signal.SIGUSR1, 8, slurm)
        self.calls_after_first = self._calls()
        self.second = self._signal([*args, "--resume"], signal.SIGTERM, 18, child_env())
        self.files_after_second = _listing(self.root / "logs" / "version_0" / "checkpoints")
        self.end = run_to_end(TRAIN_SCRIPT, [*args, "--resume", "--out", out])
        self.result = load_result(out)

    def _calls(self) -> List[str]:
        return self.scontrol_calls.read_text().splitlines() if self.scontrol_calls.exists() else []

    @staticmethod
    def _signal(args, sig, step: int, env) -> Child:
        """The run waits after ``step`` until the signal came (--hold-at), so the save
        happens at that step's batch boundary however loaded the machine is."""
        child = Child(TRAIN_SCRIPT, [*args, "--hold-at", step], env)
        child.wait_for(rf"^HOLDING {step}$")
        child.send(sig)
        child.wait()
        return child


class Background:
    """Runs every scenario, two at a time, in the order given; ``get(name)`` waits for one."""

    def __init__(self, directory: Path) -> None:
        import concurrent.futures

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="scenario")
        jobs = {
            "trainer_kill_chain": lambda: TrainerKillChain(directory / "trainer_kill_chain"),
            "trainer_reference": lambda: Reference(directory / "trainer_reference", TRAIN_SCRIPT, TRAINER_ARGS),
            "fabric_reference": lambda: Reference(directory / "fabric_reference", FABRIC_SCRIPT, []),
            "fabric_kill_chain": lambda: FabricKillChain(directory / "fabric_kill_chain"),
            "preemption": lambda: Preemption(directory / "preemption"),
            "random_kill": lambda: RandomKill(directory / "random_kill"),
            "async_kill": lambda: AsyncKill(directory / "async_kill"),
        }
        self.timings: Dict[str, tuple] = {}

        def timed(name, job):
            start = time.monotonic()
            try:
                return job()
            finally:
                self.timings[name] = (round(start - self._t0, 1), round(time.monotonic() - self._t0, 1))

        self._t0 = time.monotonic()
        self._futures = {name: self._pool.submit(timed, name, job) for name, job in jobs.items()}

    def get(self, name: str):
        return self._futures[name].result(timeout=600)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if os.environ.get("FULMEN_TEST_SCENARIO_TIMES"):
            print("\nscenario (start, end) seconds:", self.timings)
