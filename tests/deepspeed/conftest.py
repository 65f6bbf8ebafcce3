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
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ds_helpers import HERE, PYTHON, run  # noqa: E402

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
