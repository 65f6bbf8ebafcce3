"""``examples/plugin-template`` works end to end as an outside package: built and installed
with pip from a copy of its folder into an isolated directory, its own test suite (which
runs fulmen's conformance suite on its classes) passes in a fresh process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "examples" / "plugin-template"
SKIP = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def pip_install(project: Path, target: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(project)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"pip install {project} failed:\n{proc.stdout}\n{proc.stderr}"


def clean_env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULMEN_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("template")
    source = root / "source"
    shutil.copytree(TEMPLATE, source, ignore=SKIP)  # building must not write into the repository
    pip_install(source, root / "site")
    return root


def test_template_is_a_complete_package():
    for rel in ("pyproject.toml", "README.md", "src/fulmen_plugin_template/plugin.py", "tests/conftest.py",
                "tests/test_conformance.py"):
        assert (TEMPLATE / rel).is_file(), rel
    pyproject = (TEMPLATE / "pyproject.toml").read_text()
    assert '[project.entry-points."fulmen.plugins"]' in pyproject
    assert 'dependencies = ["fulmen>=0.1,<0.2"]' in pyproject


def test_installed_template_passes_its_own_tests(installed):
    tests = installed / "tests"
    shutil.copytree(TEMPLATE / "tests", tests, ignore=SKIP)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tests)],
        cwd=installed, env=clean_env(installed / "site"), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The package under test is the pip-installed one, and the conformance suite ran on it.
    assert "template-0.1.0" in out  # fulmen.testing's report header lists the discovered plugin
    for test in ("TestTimedSingleDeviceStrategy::test_trains_like_one_device",
                 "TestTimedSingleDeviceStrategy::test_saves_and_restores_exact_state",
                 "TestTF32Precision::test_trains_close_to_float32",
                 "TestJSONLinesLogger::test_survives_an_error_in_training",
                 "test_plugin.py::test_a_trainer_uses_all_four_by_name"):
        assert f"PASSED {test}" in out.replace("tests/test_conformance.py::", "").replace("tests/", ""), test
    assert " 14 passed" in out
