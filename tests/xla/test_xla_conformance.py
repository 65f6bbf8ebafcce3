"""Runs ``conformance/xla_conformance.py`` (the fulmen.testing suites for the accelerator and
the strategies) in a pytest process of its own, with the PJRT CPU device configured."""

from __future__ import annotations

import subprocess
from pathlib import Path

from xla_helpers import PYTHON, xla_env

SUITE = Path(__file__).resolve().parent / "conformance" / "xla_conformance.py"


def test_the_conformance_suites_pass(tmp_path):
    command = [PYTHON, "-m", "pytest", "-q", "-p", "fulmen.testing", "-p", "no:cacheprovider", "--rootdir",
               str(tmp_path), "-o", "addopts=-ra", str(SUITE)]
    proc = subprocess.run(command, cwd=tmp_path, env=xla_env(cpu_devices=2), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    (tmp_path / "conformance.log").write_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-8000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "passed" in summary and "skipped" not in summary, summary
