"""``examples/curated-distribution`` is a real meta-package: installed with pip into an
isolated directory, its shipped configuration is what ``fulmen plugins --check`` and a
Trainer see in that environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "curated-distribution"
SOURCE = "acme-ml-platform 2024.6.0 (fulmen.config entry point 'acme-ml-platform')"

TRAINER_SCRIPT = '''
import json, sys
import fulmen
from fulmen.errors import FulmenConfigError

trainer = fulmen.Trainer(accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=sys.argv[1])
try:
    fulmen.Trainer(accelerator="cpu", strategy="deepspeed", logger=False)
    denied = None
except FulmenConfigError as exc:
    denied = str(exc)
print(json.dumps({
    "precision": trainer.precision,
    "loggers": [type(logger).__name__ for logger in trainer.loggers],
    "explicit": fulmen.Trainer(accelerator="cpu", precision="32-true", logger=False).precision,
    "denied": denied,
}))
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("curated")
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(root / "site"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "site" / "acme_ml_platform" / "fulmen.toml").is_file()  # the config ships in the wheel
    return root / "site"


def run(args, site, cwd, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FULMEN_") and k != "PYTHONPATH"}
    clean.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120)


def test_installed_distribution_passes_its_check(site, tmp_path):
    proc = run(["-m", "fulmen", "plugins", "--check"], site, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"configuration: {SOURCE}" in out
    assert "deny: fulmen-accelerator-xla, fulmen-strategy-deepspeed" in out
    assert "require: fulmen<0.2,>=0.1, fulmen-strategy-fsdp<0.2,>=0.1, fulmen-loggers<0.2,>=0.1" in out
    assert "deepspeed (fulmen-strategy-deepspeed 0.1.0): disabled - denied by the deny list" in out
    assert "fsdp (fulmen-strategy-fsdp 0.1.0): loaded" in out
    assert out.rstrip().endswith("OK: the installed plugins match the configuration")


def test_trainer_gets_the_distributions_defaults_and_deny_list(site, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAINER_SCRIPT)
    proc = run([str(script), str(tmp_path)], site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["precision"] == "bf16-mixed" and result["loggers"] == ["CSVLogger"]
    assert result["explicit"] == "32-true"
    assert "unknown strategy 'deepspeed'" in result["denied"]
    assert "denied by the deny list" in result["denied"]


def test_a_project_layer_that_the_installed_set_does_not_meet_fails_the_check(site, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "team-app"\n[tool.fulmen.require]\nfulmen-strategy-fsdp = "<0.1"\nacme-tracker = ">=1.2"\n')
    proc = run(["-m", "fulmen", "plugins", "--check", "--json"], site, tmp_path)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["config"]["sources"] == [SOURCE, f"{tmp_path / 'pyproject.toml'} [tool.fulmen]"]
    sources = f"{SOURCE}, {tmp_path / 'pyproject.toml'} [tool.fulmen]"
    assert report["problems"] == [
        f"required plugin 'fulmen-strategy-fsdp' (from {sources}) needs fulmen-strategy-fsdp<0.1,<0.2,>=0.1 but "
        "fulmen-strategy-fsdp 0.1.0 is installed. Fix: pip install 'fulmen-strategy-fsdp<0.1,<0.2,>=0.1'",
        f"required plugin 'acme-tracker' (acme-tracker>=1.2, from {tmp_path / 'pyproject.toml'} [tool.fulmen]) is not "
        "installed; installed plugins: deepspeed, fsdp, loggers, ray, xla. Fix: pip install 'acme-tracker>=1.2'",
    ]
