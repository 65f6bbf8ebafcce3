"""The core's own built-ins pass the conformance suite that third parties run.

Every class below is what a plugin author writes for their own plugin: the suite's base
class plus a few attributes. ``ddp`` runs with two real processes (gloo on the CPU),
started by its own launcher from the suite's worker, exactly as in a user's job.
"""

from __future__ import annotations

import pytest

from fulmen.testing import (
    AcceleratorConformance,
    CheckpointIOConformance,
    ClusterEnvironmentConformance,
    LoggerConformance,
    PrecisionConformance,
    StrategyConformance,
)
from fulmen.testing.logger import csv_metrics



# ---------------------------------------------------------------------------- strategies


class TestSingleDeviceStrategy(StrategyConformance):
    strategy = "single_device"


class TestDDPStrategyTwoProcesses(StrategyConformance):
    strategy = "ddp"
    devices = 2


# ---------------------------------------------------------------------------- accelerators


class TestCPUAccelerator(AcceleratorConformance):
    accelerator = "cpu"


@pytest.mark.gpu
class TestCUDAAccelerator(AcceleratorConformance):
    accelerator = "cuda"  # skipped where no CUDA device exists


class TestMPSAccelerator(AcceleratorConformance):
    accelerator = "mps"  # skipped off Apple silicon


# ---------------------------------------------------------------------------- precisions


class TestPrecision32True(PrecisionConformance):
    precision = "32-true"


class TestPrecision64True(PrecisionConformance):
    precision = "64-true"


class TestPrecisionBF16Mixed(PrecisionConformance):
    precision = "bf16-mixed"
    atol = 5e-2  # bfloat16 keeps 8 bits of mantissa: close to float32, not equal


class TestPrecisionBF16True(PrecisionConformance):
    precision = "bf16-true"
    atol = 1e-1  # bfloat16 weights without a float32 master copy drift further


class TestPrecision16Mixed(PrecisionConformance):
    precision = "16-mixed"  # CUDA only: skipped here with the accelerator's reason
    accelerator = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    atol = 1e-2


# ---------------------------------------------------------------------------- loggers


class TestCSVLogger(LoggerConformance):
    logger = "csv"

    def read_metrics(self, logger):
        return csv_metrics(logger)


# ---------------------------------------------------------------------------- cluster environments


class TestTorchElasticEnvironment(ClusterEnvironmentConformance):
    environment = "torchelastic"
    variables = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.5",
                 "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "job-7"}
    expected = {"world_size": 4, "global_rank": 3, "local_rank": 1, "node_rank": 1, "main_address": "10.0.0.5",
                "main_port": 29500, "creates_processes_externally": True}


class TestSLURMEnvironment(ClusterEnvironmentConformance):
    environment = "slurm"
    variables = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                 "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "train"}
    expected = {"world_size": 4, "global_rank": 3, "local_rank": 1, "node_rank": 1, "main_address": "gpu07",
                "main_port": 15000 + 4242, "creates_processes_externally": True}


class TestLSFEnvironment(ClusterEnvironmentConformance):
    environment = "lsf"
    variables = {"LSB_JOBID": "77", "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "2", "JSM_NAMESPACE_LOCAL_RANK": "0",
                 "JSM_NAMESPACE_LOCAL_SIZE": "2", "MASTER_ADDR": "node1"}
    expected = {"world_size": 4, "global_rank": 2, "local_rank": 0, "node_rank": 1, "main_address": "node1",
                "main_port": 10077, "creates_processes_externally": True}


class TestMPIEnvironment(ClusterEnvironmentConformance):
    environment = "mpi"
    variables = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                 "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    expected = {"world_size": 2, "global_rank": 1, "local_rank": 1, "node_rank": 0, "main_address": "127.0.0.1",
                "main_port": 29500, "creates_processes_externally": True}


class TestLocalEnvironment(ClusterEnvironmentConformance):
    environment = "local"
    variables = {}
    expected = {"world_size": 1, "global_rank": 0, "local_rank": 0, "node_rank": 0, "main_address": "127.0.0.1",
                "creates_processes_externally": False}
    always_detects = True  # the fallback: a plain ``python train.py``


# ---------------------------------------------------------------------------- checkpoint IO


class TestTorchCheckpointIO(CheckpointIOConformance):
    checkpoint_io = "torch"


class TestAsyncCheckpointIO(CheckpointIOConformance):
    checkpoint_io = "async"


# ---------------------------------------------------------------------------- the fixture form


@pytest.mark.parametrize("name", ["torch", "async"])
def test_checkpoint_io_through_the_fixture(fulmen_conformance, name):
    fulmen_conformance.check_checkpoint_io(name)


def test_registry_fixture_sees_the_builtins(fulmen_registry):
    assert {"single_device", "ddp"} <= set(fulmen_registry.names("strategy"))
    assert fulmen_registry.get("logger", "csv").plugin == "fulmen"


def test_conformance_tests_carry_the_marker(request):
    assert TestCSVLogger.test_identity.__name__ == "test_identity"
    items = [i for i in request.session.items if i.cls is TestCSVLogger]
    assert items and all(i.get_closest_marker("fulmen_conformance") for i in items)
