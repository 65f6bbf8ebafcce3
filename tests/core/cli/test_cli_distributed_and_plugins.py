"""A 2-process DDP run writes one config, and a plugin's strategy is chosen by name from YAML."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from cli_helpers import ok, only, quiet_trainer, run_fulmen

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from plugin_helpers import strategy_dist  # noqa: E402  (tests/core/plugins: real distributions on disk)


def test_two_process_ddp_run_writes_one_config_in_one_log_directory(tmp_path):
    (tmp_path / "ddp.yaml").write_text(
        "trainer:\n  strategy: ddp\n  devices: 2\n  accelerator: cpu\n  max_epochs: 1\n"
        "model: cli_toy.Regressor\ndata: cli_toy.Points\n")
    ok(run_fulmen("fit", "--config", "ddp.yaml", *quiet_trainer(tmp_path / "runs"), cwd=tmp_path, timeout=240))
    saved = only((tmp_path / "runs").rglob("config.yaml"))  # rank 1 wrote none, and no second directory
    assert yaml.safe_load(saved.read_text())["trainer"]["devices"] == 2
    assert only(p.name for p in (tmp_path / "runs").rglob("version_*")) == saved.parent.name


def test_a_plugin_strategy_chosen_by_name_from_yaml(tmp_path):
    site = strategy_dist(tmp_path / "site", "acme-strategy", "acme", "acme_single", marker="from-acme")
    (tmp_path / "run.yaml").write_text(
        "trainer:\n  strategy: acme_single\n  max_epochs: 1\n  callbacks:\n"
        "    - class_path: cli_toy.RecordStrategy\n      init_args:\n        path: strategy.json\n"
        "model: cli_toy.Regressor\ndata: cli_toy.Points\n")
    ok(run_fulmen("fit", "--config", "run.yaml", *quiet_trainer(tmp_path / "runs"), cwd=tmp_path, pythonpath=[site]))
    record = json.loads((tmp_path / "strategy.json").read_text())
    assert record == {"module": "acme_fulmen_plugin", "marker": "from-acme"}
