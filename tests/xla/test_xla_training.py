"""Training on the PJRT CPU device for real: each strategy, precision and loop guarantee.

Equivalence runs turn dropout off and shuffling off: each process of a launch draws its
own dropout masks and its loader's seed, so only the data and the arithmetic are compared,
and those must agree to float rounding."""

from __future__ import annotations

import pytest

from xla_helpers import max_difference, run


def test_single_xla_trains_on_the_xla_device_without_recompiling(tmp_path):
    [xla] = run(tmp_path, "xla", "--strategy", "single_xla", "--epochs", "3")
    assert xla["strategy"] == "SingleXLAStrategy" and xla["param_device"] == "xla:0"
    assert xla["global_step"] == 24
    assert xla["recompilations"] == 0 and xla["recompilation_warnings"] == []
    assert xla["metrics"]["val_loss"] < 20


@pytest.mark.parametrize("precision, loss_tolerance", [("32-true", 1e-4), ("bf16-mixed", 0.05)])
def test_a_classifier_trains_on_xla_as_on_the_cpu(tmp_path, precision, loss_tolerance):
    """Four-class data, an MLP, SGD with momentum: the same per-step losses and validation
    accuracy on the PJRT CPU device as on torch's CPU (bf16-mixed: close, and as accurate)."""
    args = ("--task", "classification", "--epochs", "3", "--batch-size", "32", "--precision", precision,
            "--no-checkpointing")
    [xla] = run(tmp_path, "xla", "--accelerator", "xla", "--strategy", "single_xla", *args)
    [cpu] = run(tmp_path, "cpu", "--accelerator", "cpu", *args)
    assert len(xla["step_losses"]) == len(cpu["step_losses"]) == 48
    assert max(abs(a - b) for a, b in zip(xla["step_losses"], cpu["step_losses"])) < loss_tolerance
    assert xla["step_losses"][-1] < 0.6 * xla["step_losses"][0]
    assert xla["metrics"]["val_acc"] > 0.7
    assert abs(xla["metrics"]["val_acc"] - cpu["metrics"]["val_acc"]) <= (0.0 if precision == "32-true" else 0.02)


def test_auto_strategy_and_devices_select_single_xla(tmp_path):
    [xla] = run(tmp_path, "auto", "--strategy", "auto", "--devices", "1")
    assert xla["strategy"] == "SingleXLAStrategy"


def test_a_new_shape_every_step_is_reported_once(tmp_path):
    [xla] = run(tmp_path, "varying", "--strategy", "single_xla", "--epochs", "2", "--varying-shapes",
                "--no-checkpointing", "--no-validation")
    assert xla["recompilations"] > 0
    assert len(xla["recompilation_warnings"]) == 1
    assert "compiled again" in xla["recompilation_warnings"][0] and "drop_last" in xla["recompilation_warnings"][0]


def test_logged_values_are_not_read_back_every_step(tmp_path):
    """Every host read cuts the lazy graph: self.log every step must not cause one."""
    [quiet] = run(tmp_path, "quiet", "--strategy", "single_xla", "--epochs", "5", "--log-every", "10",
                  "--no-checkpointing", "--no-validation")
    [reading] = run(tmp_path, "reading", "--strategy", "single_xla", "--epochs", "5", "--log-every", "10",
                    "--no-checkpointing", "--no-validation", "--read-every-step")
    assert quiet["global_step"] == reading["global_step"] == 40
    # The counter sees host reads: a step that calls .item() is counted every time.
    assert reading["transfers_in_steps"] >= 40
    assert quiet["transfers_in_steps"] <= 40 // 10, quiet["transfers_in_steps"]


@pytest.mark.parametrize("precision, param_dtype, compute_dtype", [
    ("bf16-mixed", "torch.float32", "torch.bfloat16"),
    ("bf16-true", "torch.bfloat16", "torch.bfloat16"),
    ("32-true", "torch.float32", "torch.float32"),
])
def test_precisions(tmp_path, precision, param_dtype, compute_dtype):
    [xla] = run(tmp_path, precision, "--strategy", "single_xla", "--precision", precision, "--epochs", "1",
                "--no-checkpointing")
    assert xla["param_dtype"] == param_dtype
    assert xla["seen_dtypes"] == [compute_dtype]
    assert xla["metrics"]["train_loss"] == xla["metrics"]["train_loss"]  # not NaN


def test_xla_strategy_on_one_device_runs_under_torch_xla_launch(tmp_path):
    [launched] = run(tmp_path, "launched", "--strategy", "xla", "--devices", "1", "--no-checkpointing",
                     "--dropout", "0", "--no-shuffle")
    [single] = run(tmp_path, "single", "--strategy", "single_xla", "--no-checkpointing", "--dropout", "0",
                   "--no-shuffle")
    assert launched["strategy"] == "XLAStrategy" and launched["host_collectives"] is False
    assert launched["world_size"] == 1
    # The steps ran in a process torch_xla.launch started, and the weights came back here.
    assert single["trained_in_pids"] == [single["pid"]]
    assert len(launched["trained_in_pids"]) == 1 and launched["trained_in_pids"] != [launched["pid"]]
    assert max_difference(launched["params"], single["params"]) < 1e-6


def test_two_processes_on_the_cpu_device_train_like_one_with_the_whole_batch(tmp_path):
    """Host collectives: each process its half of every batch, gradients averaged over gloo,
    so both end where one process on batches of twice the size ends."""
    same = ("--no-checkpointing", "--no-validation", "--dropout", "0", "--no-shuffle")
    ranks = run(tmp_path, "two", "--strategy", "xla", "--devices", "2", "--batch-size", "4", *same, cpu_devices=2)
    [single] = run(tmp_path, "one", "--strategy", "single_xla", "--batch-size", "8", *same)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["host_collectives"] for r in ranks)
    assert all(r["world_size"] == 2 and r["global_step"] == 16 for r in ranks)
    assert max_difference(ranks[0]["params"], ranks[1]["params"]) == 0.0
    # Rank r holds samples r, r+2, ... of each batch of 8: the mean of the two halves' gradients is
    # the whole batch's, up to float rounding.
    assert max_difference(ranks[0]["params"], single["params"]) < 1e-5


@pytest.mark.parametrize("devices", [2, 4])
def test_spmd_shards_parameters_and_optimizer_state_over_the_mesh(tmp_path, devices):
    [spmd] = run(tmp_path, f"spmd{devices}", "--strategy", "xla_spmd", "--devices", "auto", "--no-checkpointing",
                 cpu_devices=devices)
    assert spmd["strategy"] == "XLASPMDStrategy" and spmd["world_size"] == 1
    assert spmd["recompilations"] == 0
    # The first layer's weight (16 x 8) is split over the devices, and so is its Adam moment.
    weight = spmd["sharding"]["params"]["net.0.weight"]
    assert weight.startswith("{devices=[") and f"{devices}" in weight, spmd["sharding"]
    assert spmd["sharding"]["exp_avg"]["net.0.weight"] == weight


def test_spmd_trains_like_one_device(tmp_path):
    same = ("--no-checkpointing", "--no-validation", "--dropout", "0", "--no-shuffle")
    [spmd] = run(tmp_path, "spmd", "--strategy", "xla_spmd", "--devices", "auto", *same, cpu_devices=2)
    [single] = run(tmp_path, "single", "--strategy", "single_xla", *same)
    # Same program, partitioned: equal up to the order of float additions.
    assert max_difference(spmd["params"], single["params"]) < 1e-4
