"""SIGUSR1/SIGTERM to a training process: finish the step, save ``last.ckpt``, say how to
resume, exit with 75 (EX_TEMPFAIL), requeue under SLURM; resuming ends bit for bit like a run
that was never interrupted. The processes run in ``ckpt_scenarios.Preemption``."""

from __future__ import annotations

from ckpt_helpers import FINAL_STEP, assert_same_training_state, metrics_rows
from ckpt_scenarios import SAVED_MESSAGE
from fulmen.trainer.preemption import PREEMPTED_EXIT_CODE


def _saved(child, signal_name: str, step: int) -> None:
    """Checks the exit code and the message (the save happened at ``step``)."""
    assert child.proc.returncode == PREEMPTED_EXIT_CODE, f"exit code {child.proc.returncode}:\n{child.output}"
    match = SAVED_MESSAGE.search(child.output)
    assert match, f"no 'saved ... Resume with' message in:\n{child.output}"
    assert match.group(1) == signal_name
    assert int(match.group(3)) == step and "DONE" not in child.output
    assert match.group(4).endswith("last.ckpt")


def test_sigusr1_saves_exits_75_and_requeues_the_slurm_job(preemption):
    _saved(preemption.first, "SIGUSR1", 8)
    assert "requeued SLURM job 4242" in preemption.first.output
    assert preemption.calls_after_first == ["requeue 4242"]  # `scontrol requeue $SLURM_JOB_ID`
    # The file it wrote was whole (checksum verified) and is where the next run started.
    start = preemption.second.start_line()
    assert start["step"] == "8" and start["from"].endswith("last.ckpt")


def test_sigterm_saves_and_exits_75_without_requeue_outside_slurm(preemption):
    _saved(preemption.second, "SIGTERM", 18)
    assert "requeue" not in preemption.second.output
    assert preemption.scontrol_calls.read_text().splitlines() == ["requeue 4242"]
    start = preemption.end.start_line()
    assert start["step"] == "18" and start["from"].endswith("last.ckpt")
    # The signal came before step 18's validation; the save waited for the batch boundary,
    # after it, so the resumed run does not validate step 18 again.
    assert "best-step=18.ckpt" in preemption.files_after_second


def test_resume_after_two_preemptions_is_bitwise_identical(preemption, trainer_reference):
    assert preemption.end.steps() == list(range(19, FINAL_STEP + 1))
    assert_same_training_state(preemption.result, trainer_reference.result)
    # No validation or row done twice or lost across the two exits.
    assert metrics_rows(preemption.result["summary"]["log_dir"]) == metrics_rows(trainer_reference.result["summary"]["log_dir"])
