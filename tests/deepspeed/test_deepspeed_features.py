"""Real DeepSpeed on 2 CPU processes: layers built in configure_model are partitioned as they
are created under ZeRO-3 (deepspeed.zero.Init) and train exactly as DDP; a module without an
optimizer trains with the config's; bf16-mixed and bf16-true run the engine in bfloat16."""

from __future__ import annotations

import pytest

from ds_helpers import ranks

pytestmark = pytest.mark.timeout(540)


@pytest.mark.parametrize("run", ["zero_init", "config_optimizer"])
def test_trains_exactly_as_ddp(feature_runs, run):
    root, _ = feature_runs
    for reference, got in zip(ranks(root / "ddp"), ranks(root / run)):
        assert got["global_step"] == reference["global_step"] == 16
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)


def test_configure_model_builds_partitioned_parameters_under_stage_3(feature_runs):
    root, _ = feature_runs
    for rank in ranks(root / "zero_init"):
        assert rank["partitioned_at_creation"] is True  # no rank held a whole layer
        assert rank["config"]["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("run,stage", [("bf16_mixed_stage_2", 2), ("bf16_true_stage_3", 3)])
def test_bf16_runs_the_engine_in_bfloat16_with_the_trainers_precision_in_the_config(feature_runs, run, stage):
    root, _ = feature_runs
    for reference, got in zip(ranks(root / "ddp"), ranks(root / run)):
        assert got["engine_dtype"] == "torch.bfloat16"
        assert got["config"]["bf16"] == {"enabled": True} and got["config"]["zero_optimization"]["stage"] == stage
        # bfloat16 rounding: close to float32's losses, but not equal to them.
        assert got["losses"] == pytest.approx(reference["losses"], rel=5e-2, abs=5e-2)
        assert got["losses"] != reference["losses"]
        half = len(got["losses"]) // 2
        assert sum(got["losses"][half:]) < sum(got["losses"][:half])


def test_torchrun_launches_the_deepspeed_strategy(feature_runs, tmp_path):
    """Under torchrun, fulmen takes the layout from torchelastic's environment and DeepSpeed
    joins fulmen's process group; the losses are those of fulmen's own launcher."""
    import json
    import socket
    import sys

    from conftest import TRAINER_SCRIPT
    from ds_helpers import run

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runs = [{"name": "torchrun_stage_2", "strategy": "deepspeed_stage_2"}]
    proc = run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                "127.0.0.1", "--master-port", port, TRAINER_SCRIPT, "--out", tmp_path, "--devices", "2",
                "--runs", json.dumps(runs)], tmp_path, "torchrun")
    assert proc.returncode == 0, proc.log[-6000:]
    got = ranks(tmp_path / "torchrun_stage_2")
    assert [r["world_size"] for r in got] == [2, 2] and got[0]["losses"] != got[1]["losses"]
    assert [r["environment"] for r in got] == ["TorchElasticEnvironment"] * 2
    for reference, rank in zip(ranks(feature_runs[0] / "ddp"), got):
        assert rank["global_step"] == reference["global_step"] == 16
        assert rank["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def fabric_runs(ds_root):
    """A Fabric loop under ZeRO-3: 12 steps saving after step 6, then a second launch that
    loads the step-6 checkpoint and trains steps 7-12."""
    import sys

    from ds_helpers import HERE, run

    root = ds_root / "fabric"
    root.mkdir()
    script = HERE / "ds_fabric_script.py"
    checkpoint = root / "state.ckpt"
    for name, extra in (("full", []), ("resumed", ["--resume"])):
        proc = run([sys.executable, script, "--out", root / name, "--checkpoint", checkpoint, *extra], root, name)
        assert proc.returncode == 0, proc.log[-6000:]
    return root


def test_fabric_builds_partitioned_trains_saves_and_resumes_exactly(fabric_runs):
    from fulmen_deepspeed import manifest

    manifest.verify_checkpoint_directory(fabric_runs / "state.ckpt")
    for full, resumed in zip(ranks(fabric_runs / "full"), ranks(fabric_runs / "resumed")):
        assert full["partitioned_at_creation"] is True  # fabric.init_module() under stage 3
        assert [s for s, _ in full["losses"]] == list(range(1, 13))
        assert [s for s, _ in resumed["losses"]] == list(range(7, 13))
        assert resumed["losses"] == full["losses"][6:]
        assert resumed["parameters"] == full["parameters"]
    first, second = ranks(fabric_runs / "full")
    assert first["losses"] != second["losses"]


def test_schedulers_keep_interval_and_frequency(feature_runs):
    root, _ = feature_runs
    for reference, got in zip(ranks(root / "ddp_scheduler"), ranks(root / "stage_3_scheduler")):
        # 16 steps, stepped every 2 -> 8 scheduler steps, halving every 3 -> 0.05 * 0.5**2.
        assert got["final_lr"] == reference["final_lr"] == pytest.approx(0.05 * 0.25)
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)


def test_optimizer_offload_to_cpu_trains_as_ddp(feature_runs):
    root, _ = feature_runs
    for reference, got in zip(ranks(root / "ddp"), ranks(root / "stage_2_offload")):
        assert got["config"]["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)


def test_the_deepspeed_launcher_launches_the_deepspeed_strategy(feature_runs, tmp_path):
    """``deepspeed --num_gpus 2`` on one node (no pdsh or SSH): its launcher sets the torch
    variables, fulmen takes the layout from them (``--no_local_rank``: the script's own
    arguments are not DeepSpeed's)."""
    import json
    import shutil
    import socket

    from conftest import TRAINER_SCRIPT
    from ds_helpers import run

    launcher = shutil.which("deepspeed")
    assert launcher, "the deepspeed distribution installs the deepspeed command"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runs = [{"name": "launcher_stage_2", "strategy": "deepspeed_stage_2"}]
    proc = run([launcher, "--num_gpus", "2", "--no_local_rank", "--master_addr", "127.0.0.1", "--master_port", port,
                TRAINER_SCRIPT, "--out", tmp_path, "--devices", "2", "--runs", json.dumps(runs)], tmp_path, "deepspeed")
    assert proc.returncode == 0, proc.log[-6000:]
    got = ranks(tmp_path / "launcher_stage_2")
    assert [r["environment"] for r in got] == ["TorchElasticEnvironment"] * 2
    for reference, rank in zip(ranks(feature_runs[0] / "ddp"), got):
        assert rank["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)
