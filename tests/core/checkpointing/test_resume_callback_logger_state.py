"""What callbacks and loggers keep survives four SIGKILLs and resumes (the chain in
conftest.py): EarlyStopping's counter and best score, ModelCheckpoint's best-k, Timer's
elapsed time, the CSV logger's version folder and rows."""

from __future__ import annotations

from pathlib import Path

from ckpt_helpers import FINAL_STEP, metrics_rows, row_keys


def test_early_stopping_and_best_k_state_match_the_uninterrupted_run(trainer_kill_chain, trainer_reference):
    resumed, reference = trainer_kill_chain.result["summary"], trainer_reference.result["summary"]
    # EarlyStopping(patience=4) stops at step 30 only if the wait count of the validations
    # before each kill came back with the checkpoint (and no validation was lost or repeated).
    assert reference["es"]["wait_count"] == 4 and reference["global_step"] == FINAL_STEP
    assert resumed["es"] == reference["es"]
    assert resumed["global_step"] == reference["global_step"]
    # ModelCheckpoint(monitor="val_loss", save_top_k=2): same ranking, same files kept.
    assert resumed["best"] == reference["best"]
    kept = {p.name for p in trainer_kill_chain.checkpoints.glob("best-*.ckpt")}
    assert kept == set(reference["best"]["best_k_models"])


def test_timer_keeps_counting_across_resumes(trainer_kill_chain):
    offsets = [float(child.start_line()["timer_offset"]) for child in trainer_kill_chain.children.values()]
    assert offsets[0] == 0.0
    # Each resumed process starts from the elapsed time stored in its checkpoint, which is
    # later in the run each time.
    assert all(b > a for a, b in zip(offsets, offsets[1:])), offsets
    assert trainer_kill_chain.result["summary"]["timer_elapsed"] > offsets[-1]


def test_csv_logger_continues_the_same_version_without_duplicate_or_missing_rows(trainer_kill_chain, trainer_reference):
    resumed_dir = Path(trainer_kill_chain.result["summary"]["log_dir"])
    reference_dir = Path(trainer_reference.result["summary"]["log_dir"])
    assert resumed_dir.name == "version_0"
    assert sorted(p.name for p in resumed_dir.parent.iterdir()) == ["version_0"]  # no version_1.. after resumes

    resumed, reference = metrics_rows(resumed_dir), metrics_rows(reference_dir)
    # The step column (with which metrics each row holds) is the uninterrupted run's: every
    # step once, the validation and epoch rows in place, nothing the killed runs logged twice.
    assert row_keys(resumed) == row_keys(reference)
    steps = [step for step, keys in row_keys(resumed) if "train_loss_step" in keys]
    assert steps == list(range(1, FINAL_STEP + 1))
    # And the values themselves: epoch means continue over the resumed batches.
    assert resumed == reference
