"""DeepSpeed ZeRO-3 checkpoints through the Trainer, for real on 2 CPU processes: ModelCheckpoint
writes complete directories (top-k and last) that pass verification; a run killed by SIGKILL
resumes from "last" bit-identically; AdamW state crosses 2 -> 1 and 1 -> 2 processes; the
engine survives fit for validate/test/predict; a fresh Trainer validates from a checkpoint; a
damaged checkpoint is refused naming its file; the directory loads into a plain Module and
converts to one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ds_helpers import Regressor, loader, ranks

pytestmark = pytest.mark.timeout(900)  # the shared launches (about 11 x 25 s) run in the first test


def _by_step(rank):
    return {step: loss for step, loss in rank["losses"]}


def test_model_checkpoint_keeps_top_2_and_last_as_complete_directories(checkpoint_runs):
    from fulmen_deepspeed import manifest

    directory = checkpoint_runs / "full" / "checkpoints"
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 3 and "last.ckpt" in names, names  # top-2 by val_loss, and last
    assert not [n for n in names if n.startswith(".")], names  # no temporary or old directories left
    for path in directory.iterdir():
        manifest.verify_checkpoint_directory(path)
        assert not list(path.glob("*.py")), "DeepSpeed's recovery scripts (code) must not be in a checkpoint"
        assert len(list((path / "checkpoint").glob("zero_pp_rank_*_optim_states.pt"))) == 2
    first, _ = ranks(checkpoint_runs / "out" / "full")
    assert Path(first["best"]).name in names and Path(first["last"]).name == "last.ckpt"


def test_sigkill_and_resume_from_last_is_bit_identical(checkpoint_runs):
    out = checkpoint_runs / "out"
    for full, resumed in zip(ranks(out / "full"), ranks(out / "resumed")):
        assert resumed["global_step"] == full["global_step"] == 24
        # The kill came after step 10; "last" was written at step 8, so steps 9.. run again.
        assert resumed["losses"][0][0] == 9
        expected = _by_step(full)
        assert [loss for _, loss in resumed["losses"]] == [expected[step] for step, _ in resumed["losses"]]
        assert resumed["parameters"] == full["parameters"]
        assert resumed["validate"] == full["validate"] and resumed["predictions"] == full["predictions"]


def test_evaluation_after_fit_runs_on_the_trained_stage_3_engine(checkpoint_runs):
    first, second = ranks(checkpoint_runs / "out" / "full")
    for rank in (first, second):
        assert rank["validate"][0]["val_loss"] > 0 and rank["test"][0]["test_loss"] > 0
        assert len(rank["predictions"]) == 1 and len(rank["predictions"][0]) == 8  # 8 samples / 2 ranks x 2 outputs
    # The trained weights predicted: each rank's half of the 8 samples (the distributed
    # sampler gives rank r samples r, r+2, ...), computed here from the gathered parameters.
    model = Regressor()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(first["parameters"][name]).view_as(p))
        x, _ = next(iter(loader(8, 8)))
        for rank in (first, second):
            expected = model(x[rank["rank"]::2]).flatten().tolist()
            assert rank["predictions"][0] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert first["predictions"] != second["predictions"]


def test_a_fresh_trainer_validates_from_a_checkpoint_directory(checkpoint_runs):
    out = checkpoint_runs / "out"
    full = ranks(out / "full")
    for rank in ranks(out / "validate_from_checkpoint"):
        # last.ckpt holds the final weights: the same validation as right after fit.
        assert rank["validate"] == full[rank["rank"]]["validate"]


@pytest.mark.parametrize("saved,resumed,reference", [
    ("two_first_epoch", "one_resumed", "mean"),
    ("one_first_epoch", "two_resumed", "per_rank"),
])
def test_adamw_state_resumes_at_another_world_size(checkpoint_runs, saved, resumed, reference):
    """One process trains on batches of 8, two on 4 each: the same samples per step, so
    the losses after the resume must match the uninterrupted 2-process run's (rank mean for
    one process) within float tolerance; without the optimizer state they drift at once."""
    out = checkpoint_runs / "out"
    full = ranks(out / "adamw_full")
    got = ranks(out / resumed, 1 if reference == "mean" else 2)
    for rank in got:
        assert rank["losses"][0][0] == 9 and rank["global_step"] == 24
        if reference == "mean":
            expected = {s: (_by_step(full[0])[s] + _by_step(full[1])[s]) / 2 for s in _by_step(full[0])}
        else:
            expected = _by_step(full[rank["rank"]])
        for step, loss in rank["losses"]:
            assert loss == pytest.approx(expected[step], rel=1e-5, abs=1e-5), step
        for name, values in rank["parameters"].items():
            assert values == pytest.approx(full[0]["parameters"][name], rel=1e-4, abs=1e-5), name


def test_resuming_sgd_at_another_world_size_says_why_not_and_what_to_do(checkpoint_runs):
    (rank,) = ranks(checkpoint_runs / "out" / "sgd_other_world_size", 1)
    assert rank["error"].startswith("FulmenCheckpointError")
    assert "Adam-type" in rank["error"] and "'exp_avg'" in rank["error"]
    assert "fulmen-deepspeed convert" in rank["error"]


def test_a_damaged_checkpoint_is_refused_naming_the_file_before_deepspeed_reads_it(checkpoint_runs):
    for rank in ranks(checkpoint_runs / "out" / "damaged"):
        assert rank["error"].startswith("FulmenCheckpointError"), rank["error"]
        assert "optim_states.pt" in rank["error"] and "SHA-256 differs" in rank["error"]


def test_the_effective_config_is_written_to_the_log_directory(checkpoint_runs):
    config = json.loads((checkpoint_runs / "full" / "deepspeed_config.json").read_text())
    assert config["zero_optimization"]["stage"] == 3
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_clipping"] == 0.0


def test_the_directory_loads_into_a_plain_module_and_converts_to_one_file(checkpoint_runs, tmp_path):
    from fulmen_deepspeed.convert import convert_checkpoint

    last = checkpoint_runs / "full" / "checkpoints" / "last.ckpt"
    (trained, _) = ranks(checkpoint_runs / "out" / "full")
    model = Regressor.load_from_checkpoint(last)
    got = {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}
    assert got == trained["parameters"]
    assert all(p.numel() > 0 for p in model.parameters())  # ZeRO-3 partitions gathered whole
    single = convert_checkpoint(last, tmp_path / "last-full.ckpt")
    state = torch.load(single, weights_only=True)["state_dict"]
    assert {k: v.flatten().tolist() for k, v in state.items()} == trained["parameters"]
    # The consolidated file is a plain fulmen checkpoint: it evaluates like the directory.
    reloaded = Regressor.load_from_checkpoint(single)
    x, _ = next(iter(loader(16, 16)))
    assert torch.equal(reloaded(x), model(x))
