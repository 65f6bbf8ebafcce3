"""``fulmen.testing`` is a pytest plugin that a suite opts into; installing fulmen alone
changes nobody's test run (no ``pytest11`` entry point)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

USES_FIXTURES = '''
def test_uses_the_fixtures(fulmen_registry, fulmen_conformance, fulmen_clean_env):
    assert "single_device" in fulmen_registry.names("strategy")
    fulmen_conformance.check_checkpoint_io("torch")
'''


def test_no_distribution_autoloads_fulmen_testing():
    autoloaded = [ep for ep in metadata.entry_points(group="pytest11") if ep.value.split(".")[0].startswith("fulmen")]
    assert autoloaded == []


def _pytest(directory, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, str(directory)],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )


def test_fixtures_exist_only_after_opting_in(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "test_plain.py").write_text(USES_FIXTURES)
    proc = _pytest(plain, "-q")
    assert proc.returncode == 1, proc.stdout
    assert "fixture 'fulmen_registry' not found" in proc.stdout

    opted = tmp_path / "opted"
    opted.mkdir()
    (opted / "conftest.py").write_text('pytest_plugins = ["fulmen.testing"]\n')
    (opted / "test_opted.py").write_text(textwrap.dedent(USES_FIXTURES))
    proc = _pytest(opted)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert "fulmen 0.1.0, plugins:" in proc.stdout  # the report header names fulmen and its plugins
