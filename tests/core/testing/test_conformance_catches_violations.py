"""The suite fails plugins that break the contract, and says which rule and why.

Each class here is a small, deliberately wrong implementation; the check that guards the
broken rule must raise ``ConformanceError`` naming that rule.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from fulmen.accelerators.cpu import CPUAccelerator
from fulmen.environments.base import ClusterEnvironment
from fulmen.io.checkpoint_io import CheckpointIO, TorchCheckpointIO
from fulmen.loggers.csv_logger import CSVLogger
from fulmen.precision.base import Precision
from fulmen.strategies.single_device import SingleDeviceStrategy
from fulmen.testing import ConformanceError
from fulmen.testing import accelerator as accelerator_checks
from fulmen.testing import checkpoint_io as io_checks
from fulmen.testing import environment as environment_checks
from fulmen.testing import logger as logger_checks
from fulmen.testing import precision as precision_checks
from fulmen.testing import strategy as strategy_checks
from fulmen.testing.logger import csv_metrics


def raises_rule(rule: str):
    return pytest.raises(ConformanceError, match=rule.replace("(", r"\(").replace(")", r"\)"))


# ---------------------------------------------------------------------------- strategies


class DoublingMeanStrategy(SingleDeviceStrategy):
    def all_reduce(self, tensor, reduce_op="mean"):
        return tensor * 2 if reduce_op == "mean" else tensor


class DoubledLossStrategy(SingleDeviceStrategy):
    def backward(self, tensor, module, *args, **kwargs):
        super().backward(tensor * 2, module, *args, **kwargs)


class ForgetfulStrategy(SingleDeviceStrategy):
    def load_optimizer_state_dict(self, optimizer, state):
        pass  # the momentum buffers are lost on restore


def test_wrong_reduction_is_caught(tmp_path):
    report = strategy_checks.run_strategy(DoublingMeanStrategy, workdir=tmp_path)
    strategy_checks.check_layout(report)
    with raises_rule("all_reduce(t, 'mean') averages over ranks") as info:
        strategy_checks.check_collectives(report)
    assert "DoublingMeanStrategy" in str(info.value) and "expected [0.0], got [0.0]" not in str(info.value)


def test_training_that_differs_from_one_device_is_caught(tmp_path):
    report = strategy_checks.run_strategy(DoubledLossStrategy, workdir=tmp_path)
    with raises_rule("training matches one device on the global batches") as info:
        strategy_checks.check_training(report)
    assert "max abs difference" in str(info.value)


def test_lost_optimizer_state_is_caught(tmp_path):
    report = strategy_checks.run_strategy(ForgetfulStrategy, workdir=tmp_path)
    strategy_checks.check_training(report)  # training itself is fine
    with raises_rule("fabric.load restores the optimizer state bit for bit"):
        strategy_checks.check_state_round_trip(report)


def test_multi_process_check_needs_an_importable_strategy(tmp_path):
    def factory():
        return SingleDeviceStrategy()

    with raises_rule("pass its registered name or 'module:attr'"):
        strategy_checks.run_strategy(factory, devices=2, workdir=tmp_path)


def test_an_instance_is_refused_with_advice():
    with raises_rule("not an instance"):
        precision_checks.make_precision(Precision())


# ---------------------------------------------------------------------------- precisions


class LabelCastingPrecision(Precision):
    name = "label-casting"

    def convert_input(self, data):
        from fulmen.utilities.apply import apply_to_tensors

        return apply_to_tensors(data, lambda t: t.float())


class LeakyDtypePrecision(Precision):
    name = "leaky"

    def forward_context(self):
        torch.set_default_dtype(torch.float64)  # and never restores it
        return contextlib.nullcontext()


def test_precision_that_casts_labels_is_caught():
    with raises_rule("convert_input leaves integer and bool tensors alone"):
        precision_checks.check_hooks(LabelCastingPrecision)


def test_precision_that_leaks_the_default_dtype_is_caught():
    try:
        with raises_rule("forward_context() restores the default dtype on exit"):
            precision_checks.check_hooks(LeakyDtypePrecision)
    finally:
        torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------- loggers


class DroppingLogger(CSVLogger):
    def log_metrics(self, metrics, step=None):
        if step is None or step % 7:
            super().log_metrics(metrics, step)


class FinalizeRaisesLogger(CSVLogger):
    def finalize(self, status):
        if status == "failed":
            raise OSError("connection to the tracking server lost")
        super().finalize(status)


def test_logger_that_drops_steps_is_caught(tmp_path):
    with raises_rule("every logged step is stored with every value") as info:
        logger_checks.check_records_every_step(DroppingLogger, csv_metrics, tmp_path)
    assert "first: [0, 7, 14" in str(info.value)


def test_logger_whose_finalize_fails_after_an_error_is_caught(tmp_path):
    with raises_rule("finalize('failed') after an error in training does not raise") as info:
        logger_checks.check_survives_error(FinalizeRaisesLogger, csv_metrics, tmp_path)
    assert "connection to the tracking server lost" in str(info.value)


# ---------------------------------------------------------------------------- checkpoint IO


class InPlaceIO(TorchCheckpointIO):
    """Writes straight into the target file: a failure leaves half a file there."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        torch.save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None):
        return torch.load(path, weights_only=True)


class LateWriterIO(CheckpointIO):
    """Keeps a reference and writes at teardown, so later changes leak into the file."""

    def __init__(self):
        self.pending = []

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        self.pending.append((checkpoint, path))

    def wait(self):
        for checkpoint, path in self.pending:
            TorchCheckpointIO().save_checkpoint(checkpoint, path)
        self.pending = []

    def load_checkpoint(self, path, map_location=None):
        return TorchCheckpointIO().load_checkpoint(path)


def test_non_atomic_checkpoint_io_is_caught(tmp_path):
    with raises_rule("a failed write leaves the previous checkpoint at that path intact"):
        io_checks.check_atomic(InPlaceIO, tmp_path)


def test_checkpoint_io_without_snapshot_is_caught(tmp_path):
    with raises_rule("it must store the values as they were when save_checkpoint was called"):
        io_checks.check_round_trip(LateWriterIO, tmp_path)


# ---------------------------------------------------------------------------- environments and accelerators


class GreedyEnvironment(ClusterEnvironment):
    name = "greedy"

    @classmethod
    def detect(cls):
        return True


class ZeroDevicesAccelerator(CPUAccelerator):
    @classmethod
    def parse_devices(cls, devices):
        return [torch.device("cpu")]  # accepts anything, even devices=0


def test_environment_that_claims_every_process_is_caught():
    with raises_rule("detect() is False where no scheduler variable is set"):
        environment_checks.check_detection(GreedyEnvironment, {"GREEDY_RANK": "0"})


def test_environment_values_are_compared_with_expected():
    with raises_rule("world_size is read from the scheduler's variables"):
        environment_checks.check_values("slurm", {"SLURM_NTASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                                                  "SLURM_STEP_ID": "0", "SLURM_NODELIST": "n1"}, {"world_size": 8})
    assert "SLURM_NTASKS" not in os.environ  # the variables were put back


def test_accelerator_that_accepts_zero_devices_is_caught():
    with raises_rule("parse_devices(0) raises FulmenConfigError"):
        accelerator_checks.check_devices(ZeroDevicesAccelerator)
