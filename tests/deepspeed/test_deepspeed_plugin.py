"""fulmen-strategy-deepspeed as a package: it is installed with its entry point, registers
its names through the plugin hook without importing deepspeed, and ``fulmen plugins``
lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from fulmen.errors import FulmenConfigError

NAMES = ["deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
         "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"]


def test_the_installed_distribution_declares_the_plugin():
    dist = metadata.distribution("fulmen-strategy-deepspeed")
    entry_points = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert entry_points[("fulmen.plugins", "deepspeed")] == "fulmen_deepspeed.plugin"
    assert any(req.startswith("fulmen") for req in dist.requires)


def test_names_are_registered_lazily_with_their_presets(clean_env):
    import fulmen

    registry = fulmen.Fabric(accelerator="cpu").registry
    for name in NAMES:
        entry = registry.get("strategy", name)
        assert entry.distribution == "fulmen-strategy-deepspeed" and entry.plugin == "deepspeed" and entry.description
    built = {name: registry.create("strategy", name) for name in NAMES if not name.endswith("_nvme")}
    assert {name: s.stage for name, s in built.items()} == {
        "deepspeed": 2, "deepspeed_stage_1": 1, "deepspeed_stage_2": 2, "deepspeed_stage_2_offload": 2,
        "deepspeed_stage_3": 3, "deepspeed_stage_3_offload": 3}
    zero = {name: s.config["zero_optimization"] for name, s in built.items()}
    assert zero["deepspeed_stage_2_offload"]["offload_optimizer"] == {"device": "cpu"}
    assert "offload_param" not in zero["deepspeed_stage_2_offload"]
    assert zero["deepspeed_stage_3_offload"]["offload_param"] == {"device": "cpu"}
    # NVMe needs a place on a fast disk: the name alone says so instead of guessing one.
    with pytest.raises(FulmenConfigError, match="nvme_path"):
        registry.create("strategy", "deepspeed_stage_3_offload_nvme")
    nvme = registry.create("strategy", "deepspeed_stage_3_offload_nvme", nvme_path="/local_nvme")
    assert nvme.config["zero_optimization"]["offload_param"] == {"device": "nvme", "nvme_path": "/local_nvme"}
    assert type(registry.create("strategy", "deepspeed")).__name__ == "DeepSpeedStrategy"


def test_discovery_does_not_import_deepspeed(clean_env):
    code = ("import sys, fulmen; f = fulmen.Fabric(accelerator='cpu'); "
            "assert 'deepspeed_stage_3' in f.registry.names('strategy'); "
            "print(sorted(m for m in sys.modules if m.startswith(('fulmen_deepspeed', 'deepspeed'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['fulmen_deepspeed', 'fulmen_deepspeed.plugin']"


def test_fulmen_plugins_json_lists_the_strategies(clean_env):
    proc = subprocess.run([sys.executable, "-m", "fulmen", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = {row["name"]: row for row in json.loads(proc.stdout)["plugins"]}["deepspeed"]
    assert row["status"] == "loaded" and row["distribution"] == "fulmen-strategy-deepspeed"
    assert row["registers"] == {"strategy": NAMES}
    from importlib import metadata

    assert row["backends"] == [f"deepspeed {metadata.version('deepspeed')}"]  # the version a bug report needs
    text = subprocess.run([sys.executable, "-m", "fulmen", "plugins"], capture_output=True, text=True, timeout=120)
    assert f"uses deepspeed {metadata.version('deepspeed')}" in text.stdout
