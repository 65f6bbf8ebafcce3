"""Real DeepSpeed on 2 CPU processes (gloo): ZeRO stages 1, 2 and 3 train exactly as DDP
does on the same model, data and seed (SGD), with gradient accumulation and clipping, and
stage 2 also accumulating without clipping; "auto"
config values are filled from the Trainer; contradictions raise naming both values."""

from __future__ import annotations

import pytest

from conftest import ACCUMULATE, CLIP
from ds_helpers import ranks

# The shared launch runs inside the first test that asks for it (pyproject's 300 s is per test).
pytestmark = pytest.mark.timeout(540)

STAGES = ["stage_1", "stage_2", "stage_3"]
MICRO_BATCHES = 2 * 64 // (2 * 4)  # 2 epochs of 64 samples, 2 processes, batch 4


@pytest.mark.parametrize("run,reference", [(run, "ddp") for run in STAGES + ["auto"]] + [("stage_2_noclip", "ddp_noclip")])
def test_per_step_losses_equal_ddps(training_runs, run, reference):
    root, _ = training_runs
    for reference, got in zip(ranks(root / reference), ranks(root / run)):
        assert got["strategy"] == "DeepSpeedStrategy" and got["world_size"] == 2
        assert got["global_step"] == reference["global_step"] == MICRO_BATCHES // ACCUMULATE
        assert len(got["losses"]) == len(reference["losses"]) == MICRO_BATCHES
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)
    # Not a vacuous comparison: the model learnt (the second epoch's mean loss is lower),
    # and the two ranks saw different data.
    first, second = ranks(root / run)
    half = MICRO_BATCHES // 2
    for rank in (first, second):
        assert sum(rank["losses"][half:]) < sum(rank["losses"][:half])
    assert first["losses"] != second["losses"]


@pytest.mark.parametrize("run,stage", [("stage_1", 1), ("stage_2", 2), ("stage_3", 3), ("auto", 2)])
def test_the_effective_config_has_the_trainers_values(training_runs, run, stage):
    root, _ = training_runs
    for rank in ranks(root / run):
        config = rank["config"]
        assert config["zero_optimization"]["stage"] == stage
        assert config["gradient_accumulation_steps"] == ACCUMULATE
        assert config["gradient_clipping"] == CLIP
        assert config["train_micro_batch_size_per_gpu"] == 4
        assert "train_batch_size" not in config  # DeepSpeed derives it


def test_an_accumulation_that_contradicts_the_trainer_raises_naming_both(training_runs):
    root, _ = training_runs
    for rank in ranks(root / "conflict_accumulate"):
        assert rank["error"].startswith("FulmenConfigError: ")
        assert "gradient_accumulation_steps=4" in rank["error"]
        assert "accumulate_grad_batches=2" in rank["error"] and '"auto"' in rank["error"]


def test_a_micro_batch_size_that_contradicts_the_loader_raises_naming_both(training_runs):
    root, _ = training_runs
    for rank in ranks(root / "conflict_micro_batch"):
        assert rank["error"].startswith("FulmenConfigError: ")
        assert "train_micro_batch_size_per_gpu=8" in rank["error"] and "batch_size=4" in rank["error"]
