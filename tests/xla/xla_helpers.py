"""Starting ``xla_script.py`` in a fresh process with the PJRT CPU device, and reading its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "xla_script.py"
PYTHON = sys.executable
TIMEOUT = 300


def xla_env(cpu_devices: int = 1, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(cpu_devices), "OMP_NUM_THREADS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::UserWarning"})
    env.pop("XLA_USE_SPMD", None)
    env.update(extra)
    return env


def run_script(tmp_path: Path, *args: str, out: Optional[Path] = None, cpu_devices: int = 1, env: Optional[dict] = None,
               expect_ok: bool = True, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    """Run the script; its combined output is kept in ``tmp_path/<out name>.log`` for diagnosis."""
    out = out or tmp_path / "out"
    command = [PYTHON, str(script), "--out", str(out), *args]
    proc = subprocess.run(command, cwd=tmp_path, env=env or xla_env(cpu_devices), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    (tmp_path / f"{out.name}.log").write_text(proc.stdout)
    if expect_ok:
        assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-6000:]}"
    return proc


def results(out: Path) -> List[dict]:
    files = sorted(out.glob("rank_*.json"))
    assert files, f"no results under {out}"
    return [json.loads(f.read_text()) for f in files]


def run(tmp_path: Path, name: str, *args: str, cpu_devices: int = 1) -> List[dict]:
    out = tmp_path / name
    run_script(tmp_path, *args, out=out, cpu_devices=cpu_devices)
    return results(out)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for key in a for x, y in zip(a[key], b[key]))
