"""fulmen-ray as a package: installed with its entry point, it registers the ``ray``
environment, strategy and callback without importing Ray, and ``fulmen plugins`` lists
them. These run without Ray installed, in the default ``tests`` session too."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

pytest.importorskip("fulmen_ray", reason="fulmen-ray is not installed: pip install -e packages/launcher-ray")


def test_the_installed_distribution_declares_the_plugin():
    dist = metadata.distribution("fulmen-ray")
    entry_points = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert entry_points[("fulmen.plugins", "ray")] == "fulmen_ray.plugin"
    assert any(req.startswith("fulmen") for req in dist.requires)


def test_discovery_registers_the_names_without_importing_ray():
    code = ("import sys, fulmen; r = fulmen.Fabric(accelerator='cpu').registry; "
            "print(sorted(k + ':' + e.name for k in ('environment', 'strategy', 'callback') "
            "for e in r.entries(k) if e.distribution == 'fulmen-ray')); "
            "print(type(fulmen.Fabric(accelerator='cpu').strategy.cluster_environment).__name__); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'fulmen_ray')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names, environment, modules = proc.stdout.strip().splitlines()
    assert names == "['callback:ray_train_report', 'environment:ray', 'strategy:ray']"
    assert environment == "LocalEnvironment"  # a plain process is no Ray worker
    assert modules == "['fulmen_ray', 'fulmen_ray.environment', 'fulmen_ray.plugin']"


def test_fulmen_plugins_lists_the_names_and_the_ray_version():
    proc = subprocess.run([sys.executable, "-m", "fulmen", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = {row["name"]: row for row in json.loads(proc.stdout)["plugins"]}["ray"]
    assert row["status"] == "loaded" and row["distribution"] == "fulmen-ray"
    assert row["registers"] == {"callback": ["ray_train_report"], "environment": ["ray"], "strategy": ["ray"]}
    try:
        version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        version = None
    if version:
        assert f"ray {version}" in row["backends"]
