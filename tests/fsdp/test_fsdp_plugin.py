"""fulmen-strategy-fsdp as a package: it installs, registers its names through the plugin
hooks without importing torch.distributed.fsdp, shows in ``fulmen plugins``, ships the
``fulmen-fsdp`` command, and refuses what cannot work with a message naming the option."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import torch

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.precision import Precision

REPO = Path(__file__).resolve().parents[2]
NAMES = ["fsdp", "fsdp_cpu_offload", "hsdp"]


def test_the_installed_distribution_declares_the_plugin_and_the_command():
    dist = metadata.distribution("fulmen-strategy-fsdp")
    entry_points = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert entry_points[("fulmen.plugins", "fsdp")] == "fulmen_fsdp.plugin"
    assert entry_points[("console_scripts", "fulmen-fsdp")] == "fulmen_fsdp.consolidate:main"
    assert any(req.startswith("fulmen") for req in dist.requires)


def test_a_wheel_builds_with_the_modules_entry_points_and_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(REPO / "packages" / "strategy-fsdp")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("fulmen_strategy_fsdp-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"fulmen_fsdp/strategy.py", "fulmen_fsdp/checkpoint.py", "fulmen_fsdp/plugin.py"} <= names
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[fulmen.plugins]\nfsdp = fulmen_fsdp.plugin" in entry_points
    assert "fulmen-fsdp = fulmen_fsdp.consolidate:main" in entry_points


def test_names_are_registered_lazily_with_their_presets(clean_env):
    registry = fulmen.Fabric(accelerator="cpu").registry
    for name in NAMES:
        entry = registry.get("strategy", name)
        assert entry.distribution == "fulmen-strategy-fsdp" and entry.plugin == "fsdp" and entry.description
    offload = registry.create("strategy", "fsdp_cpu_offload")
    hybrid = registry.create("strategy", "hsdp")
    plain = registry.create("strategy", "fsdp")
    assert type(plain).__name__ == "FSDPStrategy" and plain.state_dict_type == "sharded"
    assert offload.cpu_offload is True and hybrid.sharding_strategy == "hybrid"


def test_discovery_does_not_import_fsdp(clean_env):
    code = ("import sys, fulmen; f = fulmen.Fabric(accelerator='cpu'); "
            "assert 'fsdp' in f.registry.names('strategy'); "
            "print(sorted(m for m in sys.modules if m.startswith(('fulmen_fsdp', 'torch.distributed.fsdp', "
            "'torch.distributed.tensor'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['fulmen_fsdp', 'fulmen_fsdp.plugin']"


def test_fulmen_plugins_json_lists_the_strategies(clean_env):
    proc = subprocess.run([sys.executable, "-m", "fulmen", "plugins", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)["plugins"]}
    row = rows["fsdp"]
    assert row["status"] == "loaded" and row["distribution"] == "fulmen-strategy-fsdp"
    assert row["registers"] == {"strategy": NAMES}


def test_the_command_has_help():
    proc = subprocess.run([str(Path(sys.executable).parent / "fulmen-fsdp"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "consolidate" in proc.stdout


# ---------------------------------------------------------------------------- refusals, before any process starts

def test_a_gpu_precision_on_the_cpu_names_the_cpu_precisions(clean_env):
    with pytest.raises(FulmenConfigError, match=r"precision='16-mixed' needs a CUDA GPU.*'bf16-mixed'"):
        fulmen.Fabric(accelerator="cpu", strategy="fsdp", precision="16-mixed", devices=2)


def test_a_precision_fsdp_does_not_know_is_refused(clean_env):
    class EightBit(Precision):
        name = "8-mixed"

    with pytest.raises(FulmenConfigError, match=r"strategy 'fsdp' does not support precision='8-mixed'; choose one of"):
        fulmen.Fabric(accelerator="cpu", strategy="fsdp", plugins=[EightBit()], devices=2)


def test_hsdp_shard_size_must_divide_the_world(clean_env):
    from fulmen_fsdp import FSDPStrategy

    with pytest.raises(FulmenConfigError, match=r"hsdp: the world size 2 is not a multiple.*hsdp_shard_size="):
        fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(sharding_strategy="hybrid", hsdp_shard_size=3), devices=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="pinned memory works with CUDA")
def test_pinned_cpu_offload_without_cuda_says_pin_memory_false(clean_env):
    from torch.distributed.fsdp import CPUOffloadPolicy

    from fulmen_fsdp import FSDPStrategy

    with pytest.raises(FulmenConfigError, match=r"CPUOffloadPolicy\(pin_memory=False\)"):
        fulmen.Fabric(accelerator="cpu", strategy=FSDPStrategy(cpu_offload=CPUOffloadPolicy()), devices=2)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"state_dict_type": "local"}, "state_dict_type='local'"),
        ({"sharding_strategy": "zero3"}, "use 'full' (fsdp) or 'hybrid' (hsdp)"),
        ({"start_method": "spawn"}, "start_method='popen'"),
        ({"auto_wrap_policy": 42}, "auto_wrap_policy=42"),
        ({"activation_checkpointing_policy": [int]}, "activation_checkpointing_policy="),
        ({"hsdp_shard_size": 0}, "hsdp_shard_size=0"),
        ({"reshard_after_forward": 0}, "reshard_after_forward=0"),
        ({"mixed_precision": "bf16"}, "MixedPrecisionPolicy"),
    ],
)
def test_invalid_options_are_refused_with_the_option_name(options, message):
    from fulmen_fsdp import FSDPStrategy

    with pytest.raises(FulmenConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FSDPStrategy(**options)


@pytest.fixture
def clean_env(monkeypatch):
    from fulmen.plugins import discovery

    for var in (discovery.ENV_DISABLE_AUTOLOAD, discovery.ENV_ALLOW, discovery.ENV_DENY):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch
