"""Running ``fulmen`` in a subprocess, as a user does, with ``cli_toy`` importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import torch

HERE = Path(__file__).resolve().parent
FULMEN_ENV = ("FULMEN_DISABLE_PLUGIN_AUTOLOAD", "FULMEN_PLUGINS_ALLOW", "FULMEN_PLUGINS_DENY", "FULMEN_GLOBAL_SEED")


def _env(pythonpath: Iterable[os.PathLike]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in FULMEN_ENV and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), str(HERE)])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_fulmen(*args: str, cwd: Path, pythonpath: Iterable[os.PathLike] = (), timeout: int = 180) -> subprocess.CompletedProcess:
    """``python -m fulmen ARGS`` in a fresh process, with ``cli_toy`` importable."""
    return subprocess.run([sys.executable, "-m", "fulmen", *args], cwd=cwd, env=_env(pythonpath),
                          capture_output=True, text=True, timeout=timeout)


def run_python(code: str, *args: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(()), capture_output=True,
                          text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def quiet_trainer(root: Path) -> list:
    """Options that keep a test run small and its output in ``root``."""
    return ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]


def checkpoint_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def only(paths) -> Path:
    paths = sorted(paths)
    assert len(paths) == 1, paths
    return paths[0]
