"""The real 2-process launches of the DeepSpeed tests, shared by the tests that read them.

Skipped as a whole, with the reason, where deepspeed is not installed (the default ``nox -s
tests`` session); ``nox -s deepspeed`` installs it. A launch costs ~10 s plus deepspeed's
import, so each one runs several checks' worth of training (session scope: once each).

    training  2 processes: DDP (the reference), deepspeed_stage_1/2/3 by name, a
              DeepSpeedStrategy whose config says "auto", all with accumulate_grad_batches=2
              and gradient clipping; DDP and stage 2 accumulating without clipping; then
              two runs whose config contradicts the Trainer
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ds_helpers import HERE, PYTHON, run  # noqa: E402

run_launch = run

SKIP_REASON = "deepspeed is not installed: DS_BUILD_OPS=0 pip install deepspeed (or run nox -s deepspeed)"
TRAINER_SCRIPT = HERE / "ds_trainer_script.py"
ACCUMULATE, CLIP = 2, 0.5
COMMON = {"accumulate": ACCUMULATE, "clip": CLIP}
AUTO_CONFIG = {
    "zero_optimization": {"stage": 2},
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
}
TRAINING_RUNS = [
    {**COMMON, "name": "ddp", "strategy": "ddp"},
    {**COMMON, "name": "stage_1", "strategy": "deepspeed_stage_1"},
    {**COMMON, "name": "stage_2", "strategy": "deepspeed_stage_2"},
    {**COMMON, "name": "stage_3", "strategy": "deepspeed_stage_3"},
    {**COMMON, "name": "auto", "strategy": {"config": AUTO_CONFIG}},
    # Without clipping: clipped gradients have the same norm whatever their scale, so only
    # these runs notice a loss divided twice for accumulation (checked: they differ by 0.44
    # with DeepSpeed's own 1/accumulate on top of the Trainer's), or DeepSpeed's silent
    # default gradient_clipping=1.0 (they differed by 0.35 before the config said 0.0).
    {"accumulate": ACCUMULATE, "name": "ddp_noclip", "strategy": "ddp"},
    {"accumulate": ACCUMULATE, "name": "stage_2_noclip", "strategy": "deepspeed_stage_2"},
    # Last: these raise in every rank (the same error, at the same point).
    {**COMMON, "name": "conflict_accumulate", "expect_error": True,
     "strategy": {"stage": 2, "config": {"gradient_accumulation_steps": 4}}},
    {**COMMON, "name": "conflict_micro_batch", "expect_error": True,
     "strategy": {"stage": 2, "config": {"train_micro_batch_size_per_gpu": 8}}},
]


CHECKPOINT_SCRIPT = HERE / "ds_checkpoint_script.py"
FEATURE_RUNS = [
    {"name": "ddp", "strategy": "ddp"},
    {"name": "zero_init", "strategy": "deepspeed_stage_3", "model": "configure_model"},
    {"name": "config_optimizer", "model": "config_optimizer",
     "strategy": {"stage": 2, "config": {"optimizer": {"type": "SGD", "params": {"lr": 0.05, "momentum": 0.9}}}}},
    {"name": "bf16_mixed_stage_2", "strategy": "deepspeed_stage_2", "precision": "bf16-mixed"},
    {"name": "bf16_true_stage_3", "strategy": "deepspeed_stage_3", "precision": "bf16-true"},
    {"name": "ddp_scheduler", "strategy": "ddp", "model": "scheduler"},
    {"name": "stage_3_scheduler", "strategy": "deepspeed_stage_3", "model": "scheduler"},
    # Optimizer state and step in CPU memory with the client's torch optimizer (DeepSpeed's
    # own CPU Adam would JIT-compile for a minute first; zero_force_ds_cpu_optimizer allows it).
    {"name": "stage_2_offload", "strategy": {"stage": 2, "offload_optimizer": True,
                                             "config": {"zero_force_ds_cpu_optimizer": False}}},
]


def launch_checkpoint_run(root: Path, run: dict, state: str, devices: int = 2, expect_code: int = 0):
    """One run of ds_checkpoint_script.py; ``state`` is its default_root_dir under ``root``
    (a killed run and its resume share one)."""
    cmd = [PYTHON, CHECKPOINT_SCRIPT, "--out", root / "out", "--root", root / state, "--devices", devices,
           "--run", json.dumps(run)]
    proc = run_launch(cmd, root, run["name"])
    if expect_code is not None:
        assert proc.returncode == expect_code, proc.log[-6000:]
    return proc


def launch_trainer(root: Path, name: str, runs, devices: int = 2, expect_code: int = 0):
    proc = run([PYTHON, TRAINER_SCRIPT, "--out", root, "--devices", devices, "--runs", json.dumps(runs)], root, name)
    if expect_code is not None:
        assert proc.returncode == expect_code, proc.log[-6000:]
    return proc


def pytest_collection_modifyitems(config, items):
    """Every test here skips, with the reason, where deepspeed is not installed (the default
    ``nox -s tests`` session). Marked at collection, so no fixture (a 2-process launch) runs
    first; a module-level importorskip in a conftest loaded as an initial one is an error."""
    spec = importlib.util.find_spec("deepspeed")
    # ``origin`` is None for a namespace package: with ``tests/`` on sys.path this very
    # folder, tests/deepspeed, would pass for the library.
    if spec is not None and spec.origin is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ds_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deepspeed")


@pytest.fixture(scope="session")
def training_runs(ds_root):
    root = ds_root / "training"
    root.mkdir()
    proc = launch_trainer(root, "training", TRAINING_RUNS)
    return root, proc


@pytest.fixture
def clean_env(monkeypatch):
    from fulmen.plugins import discovery

    for var in (discovery.ENV_DISABLE_AUTOLOAD, discovery.ENV_ALLOW, discovery.ENV_DENY):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(scope="session")
def feature_runs(ds_root):
    """zero.Init through configure_model, the config's optimizer, bf16 precisions; DDP as reference."""
    root = ds_root / "features"
    root.mkdir()
    return root, launch_trainer(root, "features", FEATURE_RUNS)


@pytest.fixture(scope="session")
def checkpoint_runs(ds_root):
    """ZeRO-3 on 2 processes with ModelCheckpoint (top-2 by val_loss, last; validating every 4
    steps): uninterrupted and then evaluated; killed by SIGKILL after step 10 and resumed
    from "last"; with AdamW, 2 -> 1 and 1 -> 2 processes across a checkpoint; a fresh
    Trainer validating from a checkpoint; resuming from a damaged one; SGD (no Adam state)
    at another world size."""
    root = ds_root / "checkpoints"
    root.mkdir()
    launch_checkpoint_run(root, {"name": "full", "evaluate_after": True}, "full")
    launch_checkpoint_run(root, {"name": "killed", "kill_at_step": 10}, "killed", expect_code=None)
    launch_checkpoint_run(root, {"name": "resumed", "ckpt_path": "last", "evaluate_after": True}, "killed")
    adamw = {"optimizer": "adamw"}
    launch_checkpoint_run(root, {**adamw, "name": "adamw_full"}, "adamw_full")
    launch_checkpoint_run(root, {**adamw, "name": "two_first_epoch", "epochs": 1}, "two_to_one")
    launch_checkpoint_run(root, {**adamw, "name": "one_resumed", "ckpt_path": "last"}, "two_to_one", devices=1)
    launch_checkpoint_run(root, {**adamw, "name": "one_first_epoch", "epochs": 1}, "one_to_two", devices=1)
    launch_checkpoint_run(root, {**adamw, "name": "two_resumed", "ckpt_path": "last"}, "one_to_two")
    last = root / "full" / "checkpoints" / "last.ckpt"
    launch_checkpoint_run(root, {"name": "validate_from_checkpoint", "mode": "validate", "ckpt_path": str(last)},
                          "validate")
    damaged = root / "damaged" / "last.ckpt"
    shutil.copytree(last, damaged)
    victim = sorted((damaged / "checkpoint").glob("*optim_states.pt"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    launch_checkpoint_run(root, {"name": "damaged", "ckpt_path": str(damaged), "expect_error": True}, "damaged_run")
    launch_checkpoint_run(root, {"name": "sgd_other_world_size", "ckpt_path": str(last), "expect_error": True},
                          "sgd_other", devices=1)
    return root
