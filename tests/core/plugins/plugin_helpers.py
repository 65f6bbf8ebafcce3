"""Helpers for the plugin tests: real distributions on disk, and processes that see them.

Discovery reads installed metadata, so the tests install plugins for real: either by
laying out a ``*.dist-info`` folder plus the plugin's modules in a directory of their own
(what ``pip install --target`` produces, minus the RECORD), or with pip itself where the
packaging path matters (see ``test_plugin_third_party.py``). Each distribution gets its own
directory so the order in which discovery finds them is the order on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from fulmen.plugins import discovery, policy

TESTS_DIR = Path(__file__).resolve().parents[2]
FULMEN_ENV = (policy.ENV_DISABLE_AUTOLOAD, policy.ENV_ALLOW, policy.ENV_DENY)


def write_dist(
    site: Path,
    name: str,
    modules: Dict[str, str],
    entry_points: Dict[str, str],
    requires: Sequence[str] = ("fulmen>=0.1",),
    version: str = "1.0.0",
) -> Path:
    """Install distribution ``name`` into ``site`` by writing its files.

    ``modules`` maps a relative path (``"pkg/plugin.py"``) to its source; ``entry_points``
    maps entry-point names of the ``fulmen.plugins`` group to ``module[:attr]`` targets.
    """
    site.mkdir(parents=True, exist_ok=True)
    for rel, source in modules.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    lines = [f"[{discovery.ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def strategy_plugin(module: str, strategy: str, marker: str = "") -> str:
    """Source of a plugin module registering ``strategy`` as a SingleDeviceStrategy subclass."""
    return f'''
import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen.strategies import SingleDeviceStrategy

    class Plugged(SingleDeviceStrategy):
        origin = {module!r}
        marker = {marker!r}

    register({strategy!r}, Plugged, "from {module}")
'''


def strategy_dist(root, dist: str, entry: str, strategy: str, **kwargs):
    module = f"{entry}_fulmen_plugin"
    return write_dist(
        root / dist, dist, {f"{module}.py": strategy_plugin(module, strategy, **kwargs)}, {entry: module}
    )


def subprocess_env(pythonpath: Iterable[os.PathLike] = (), **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FULMEN_ENV and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), str(TESTS_DIR)])
    env.update(extra)
    return env


def run_python(
    args: Sequence[str],
    pythonpath: Iterable[os.PathLike] = (),
    cwd: Optional[os.PathLike] = None,
    check: bool = True,
    **env: str,
) -> subprocess.CompletedProcess:
    """Run the venv's interpreter with ``args`` in a clean environment."""
    proc = subprocess.run(
        [sys.executable, *args],
        env=subprocess_env(pythonpath, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def plugins_json(pythonpath: Iterable[os.PathLike] = (), **env: str) -> Dict[str, dict]:
    """``python -m fulmen plugins --json`` in a fresh process, as ``{plugin name: row}``."""
    proc = run_python(["-m", "fulmen", "plugins", "--json"], pythonpath, **env)
    return {row["name"]: row for row in json.loads(proc.stdout)["plugins"]}


def last_json_line(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def pip_install(project_dir: Path, target: Path) -> Path:
    """``pip install`` a source tree into ``target`` offline, as a user would install it."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(project_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"pip install {project_dir} failed:\n{proc.stdout}\n{proc.stderr}")
    return target
