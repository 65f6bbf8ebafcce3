"""fulmen on a real local Ray cluster: 2 Ray Train workers train exactly as fulmen's own DDP
on 2 processes, and a worker SIGKILLed mid-epoch is survived with an exact resume."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import SKIP_REASON, ray_installed

if not ray_installed():
    pytest.skip(SKIP_REASON, allow_module_level=True)

import torch  # noqa: E402

from ray_programs import EVERY_N_STEPS  # noqa: E402

FINAL_STEP = 12  # 2 epochs of 6 batches on each of the 2 ranks
pytestmark = pytest.mark.timeout(420)  # a Ray job that hangs (no resources, a lost kill) fails


def worker_views(out):
    return [json.loads((out / f"worker{rank}.json").read_text()) for rank in (0, 1)]


def load(path):
    return torch.load(path, weights_only=True)


def csv_rows(out):
    with open(out / "csv" / "version_0" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_equal_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_final_state(out, reference):
    got, want = load(out / "final.ckpt"), load(reference / "final.ckpt")
    assert got["global_step"] == want["global_step"] == FINAL_STEP
    assert_equal_tensors(got["state_dict"], want["state_dict"], "state_dict")
    assert_equal_tensors(got["optimizer_states"], want["optimizer_states"], "optimizer")
    assert_equal_tensors(got["loops"], want["loops"], "loops")


def test_two_ray_workers_train_like_fulmen_ddp_on_two_processes(uninterrupted, ddp_reference):
    result, out, reports = uninterrupted
    assert result.error is None
    losses = [float(r["train_loss"]) for r in csv_rows(out)]
    want = [float(r["train_loss"]) for r in csv_rows(ddp_reference)]
    assert len(losses) == FINAL_STEP and losses == want
    assert_same_final_state(out, ddp_reference)


def test_workers_take_ranks_and_process_group_from_ray_for_trainer_and_fabric(uninterrupted):
    _, out, _ = uninterrupted
    views = worker_views(out)
    for rank, view in enumerate(views):
        # Ray also sets torchrun's variables; the Ray environment ranks above torchelastic.
        assert view["environment"] == "RayEnvironment"
        assert (view["global_rank"], view["ray_world_rank"], view["world_size"], view["trainer_world_size"]) == (rank, rank, 2, 2)
        assert (view["local_rank"], view["node_rank"]) == (rank, 0)  # one node here
        assert view["backend"] == "gloo" and view["resumed_from"] is None
        assert (view["fabric_world_size"], view["fabric_all_reduce"]) == (2, 3.0)  # 1 + 2 over both workers


def test_every_logged_row_reaches_ray_and_the_csv_logger_once(uninterrupted):
    result, out, reports = uninterrupted
    ray_rows = [row for report in reports for row in report["metrics"]["fulmen_rows"]]
    csv_steps = [int(r["step"]) for r in csv_rows(out)]
    assert [row["step"] for row in ray_rows] == csv_steps == list(range(1, FINAL_STEP + 1))
    assert [row["train_loss"] for row in ray_rows] == [float(r["train_loss"]) for r in csv_rows(out)]
    # One report per ModelCheckpoint save, each with its checkpoint.
    assert [r["checkpoint"] for r in reports] == [True] * (FINAL_STEP // EVERY_N_STEPS)
    assert result.checkpoint is not None


def logger_views(out):
    return [json.loads((out / f"loggers{rank}.json").read_text()) for rank in (0, 1)]


def test_the_row_collection_leaves_the_users_loggers_alone(uninterrupted):
    _, out, _ = uninterrupted
    for view in logger_views(out):
        assert (view["logger"], view["loggers"]) == ("CSVLogger", ["CSVLogger"])
        assert view["log_dir"] == str(out / "csv" / "version_0")


def test_without_a_logger_rows_still_reach_ray_once_and_trainer_logger_stays_none(without_logger):
    result, out, reports = without_logger
    assert result.error is None
    for view in logger_views(out):
        assert (view["logger"], view["loggers"]) == (None, [])
        assert view["log_dir"] == view["default_root_dir"] == str(out)
    ray_rows = [row for report in reports for row in report["metrics"]["fulmen_rows"]]
    assert [row["step"] for row in ray_rows] == list(range(1, FINAL_STEP + 1))
    assert all(isinstance(row["train_loss"], float) for row in ray_rows)
    assert [r["checkpoint"] for r in reports] == [True] * (FINAL_STEP // EVERY_N_STEPS)


def test_a_worker_killed_mid_epoch_is_restarted_and_resumes_exactly(killed, ddp_reference):
    result, out, reports, pid_file = killed
    assert pid_file.exists(), "the worker never announced its PID: nothing was killed"
    assert result.error is None
    # The group that finished is a new one (the killed PID is not in it), and it resumed from
    # the checkpoint fulmen wrote at step 3 and reported to Ray.
    views = worker_views(out)
    assert int(pid_file.read_text()) not in {view["pid"] for view in views}
    for view in views:
        assert view["resumed_from"] and view["resumed_from"].endswith("fulmen.ckpt")
        assert load(view["resumed_from"])["global_step"] == EVERY_N_STEPS
    assert_same_final_state(out, ddp_reference)
    # Steps 4-5 ran, were logged, and were lost with the worker; the CSV logger dropped them
    # on resume from step 3's checkpoint and the resumed run logged them again.
    rows = csv_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, FINAL_STEP + 1))
    assert [float(r["train_loss"]) for r in rows] == [float(r["train_loss"]) for r in csv_rows(ddp_reference)]
    ray_steps = [row["step"] for report in reports for row in report["metrics"]["fulmen_rows"]]
    assert ray_steps == list(range(1, FINAL_STEP + 1))
