"""What ``pip install fulmen`` adds to an environment that already has torch, against
``pip install lightning``.

    python benchmarks/deps_size.py [--torch torch==2.13.0] [--keep DIR] [--json out.json]

Builds two fresh virtual environments, installs torch into each, records the installed
distributions, then installs ``./packages/core`` (fulmen) into one and ``lightning`` into the
other. Reported: the distributions each added (name, version, size on disk from its RECORD)
and the growth of site-packages. Takes a couple of minutes (torch is installed twice).
Where a local wheel cache (/opt/wheels) exists it is used for torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCAL_WHEELS = "/opt/wheels"

# Runs inside a venv: every installed distribution with its version and bytes on disk.
_INVENTORY = r"""
import json, os, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
out = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    size = 0
    for f in dist.files or []:
        try:
            size += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    out[name.lower()] = {"name": name, "version": dist.version, "bytes": size}
total = 0
for root, _, files in os.walk(site):
    for f in files:
        try:
            total += os.path.getsize(os.path.join(root, f))
        except OSError:
            pass
print(json.dumps({"dists": out, "site_bytes": total}))
"""


def _pip(venv: Path, *args: str) -> None:
    find_links = ["--find-links", LOCAL_WHEELS] if os.path.isdir(LOCAL_WHEELS) else []
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *find_links, *args], check=True)


def _inventory(venv: Path) -> dict:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _INVENTORY], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure(base: Path, label: str, torch_req: str, requirement: str) -> dict:
    venv = base / label
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(venv, torch_req)
    before = _inventory(venv)
    start = time.perf_counter()
    _pip(venv, requirement)
    seconds = time.perf_counter() - start
    after = _inventory(venv)
    added = {k: v for k, v in after["dists"].items() if k not in before["dists"]}
    changed = {k: {"from": before["dists"][k]["version"], "to": v["version"]} for k, v in after["dists"].items() if k in before["dists"] and before["dists"][k]["version"] != v["version"]}
    return {
        "requirement": requirement,
        "install_s": seconds,
        "added": dict(sorted(added.items(), key=lambda kv: -kv[1]["bytes"])),
        "changed": changed,
        "added_bytes": sum(v["bytes"] for v in added.values()),
        "site_growth_bytes": after["site_bytes"] - before["site_bytes"],
        "already_there_with_torch": sorted(before["dists"]),
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch", default=os.environ.get("FULMEN_TORCH", "torch==2.13.0"))
    p.add_argument("--keep", help="build the environments here and keep them")
    p.add_argument("--json")
    args = p.parse_args(argv)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="deps-size-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        # A copy: pip's setuptools build would leave build/ in the source tree.
        source = base / "fulmen-core-src"
        shutil.copytree(ROOT / "packages" / "core", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        results = {
            "fulmen": measure(base, "fulmen", args.torch, str(source)),
            "lightning": measure(base, "lightning", args.torch, "lightning"),
        }
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    for label, r in results.items():
        print(f"\n{label}: `pip install {'./packages/core' if label == 'fulmen' else r['requirement']}` "
              f"added {len(r['added'])} distributions, {_mb(r['added_bytes'])} (site-packages grew {_mb(r['site_growth_bytes'])}), in {r['install_s']:.1f} s")
        for d in r["added"].values():
            print(f"  {d['name']} {d['version']}: {_mb(d['bytes'])}")
        if r["changed"]:
            print(f"  changed: {r['changed']}")
    results["command"] = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
