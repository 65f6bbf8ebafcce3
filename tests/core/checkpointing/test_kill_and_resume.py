"""SIGKILL a training process anywhere, resume from ``last``, end bit for bit where an
uninterrupted run ends: parameters, Adam's state (moments, step counts), the scheduler.

The runs are real processes (``train_script.py``, ``fabric_train_script.py``) driven by the
scenarios in ``ckpt_scenarios.py``. A kill point is either exact (the script announces it and
sleeps there until killed) or a seeded random delay.
"""

from __future__ import annotations

from ckpt_helpers import FINAL_STEP, assert_same_training_state


def test_trainer_killed_at_chosen_points_resumes_bitwise_identical(trainer_kill_chain, trainer_reference):
    chain = trainer_kill_chain  # killed at step:4, saved:6, val_end:12, midwrite:2, then to the end
    starts = {point: int(child.start_line()["step"]) for point, child in chain.children.items()}
    assert starts == {"step:4": 0, "saved:6": 3, "val_end:12": 6, "midwrite:2": 12, "end": 15}
    # The runs after saved:6 and val_end:12 resumed from files written right before those
    # kills, with work left in their batch or epoch (log row, validation, epoch end).
    assert chain.children["val_end:12"].start_line()["from"].endswith("last.ckpt")
    assert chain.children["midwrite:2"].start_line()["from"].endswith("best-step=12.ckpt")

    # The kill during a save left half a file under a temporary name and nothing else: the
    # file being written does not exist, last.ckpt is still the previous, whole checkpoint.
    files = chain.after_kill["midwrite:2"]
    assert any(name.endswith(".tmp") for name in files)
    assert "epoch=1-step=18.ckpt" not in files and "epoch=1-step=15.ckpt" in files
    assert chain.last_after_midwrite["global_step"] == 15

    assert chain.children["end"].steps() == list(range(16, FINAL_STEP + 1))
    assert_same_training_state(chain.result, trainer_reference.result)


def test_trainer_killed_at_a_random_time_during_slow_saves_resumes_bitwise_identical(random_kill, trainer_reference):
    assert random_kill.killed.proc.returncode == -9, f"the run ended before the kill:\n{random_kill.killed.output}"
    assert_same_training_state(random_kill.result, trainer_reference.result)


def test_trainer_with_async_save_killed_while_a_background_write_is_in_flight(async_kill, trainer_reference):
    assert any(name.endswith(".tmp") for name in async_kill.after_kill)
    # The 3rd write is step 6's file, so step 3's is the newest whole one.
    assert async_kill.end.start_line()["step"] == "3"
    assert_same_training_state(async_kill.result, trainer_reference.result)


def test_fabric_loop_killed_and_resumed_is_bitwise_identical(fabric_kill_chain, fabric_reference):
    """``fabric.save({"model", "optimizer", "scheduler", "loader", "step", "epoch"})`` every 5
    steps; ``fabric.load`` continues with the next batch of the same shuffled epoch and the
    same random streams."""
    chain = fabric_kill_chain  # killed at midwrite:2 (step 10's save), saved:15, then to the end
    starts = {point: int(child.start_line()["step"]) for point, child in chain.children.items()}
    assert starts == {"midwrite:2": 0, "saved:15": 5, "end": 15}
    assert any(name.endswith(".tmp") for name in chain.after_kill)
    assert chain.last_after_midwrite["step"] == 5  # the half-written save did not touch it
    assert_same_training_state(chain.result, fabric_reference.result)
