"""Capabilities are answered by objects, not by backend names in the core: the accelerator
owns its random generators and decides non-blocking copies, the cluster environment
requeues, the strategy decides the evaluation context and sync_batchnorm, and the
launcher protocol says who runs the work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.accelerators.cpu import CPUAccelerator
from fulmen.environments.base import ClusterEnvironment
from fulmen.errors import FulmenConfigError
from fulmen.strategies import SingleDeviceStrategy
from fulmen.strategies.launcher import Launcher, runs_in_workers
from fulmen.utilities import rng

CORE = Path(fulmen.__file__).parent


class GeneratorAccelerator(CPUAccelerator):
    """A device type with a generator of its own, as an XLA or TPU accelerator has."""

    name = "cpu_with_generator"
    non_blocking_copies = True

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(11)

    def get_rng_state(self):
        return self.generator.get_state()

    def set_rng_state(self, state) -> None:
        self.generator.set_state(state)


def test_the_accelerator_owns_its_generators_in_the_rng_record():
    accelerator = GeneratorAccelerator()
    saved = rng.capture(accelerator)
    assert saved["device"]["accelerator"] == "cpu_with_generator"
    first = torch.rand(3, generator=accelerator.generator)
    rng.restore(saved, accelerator)
    assert torch.equal(torch.rand(3, generator=accelerator.generator), first)
    # A state written by another kind of accelerator is left alone.
    other = CPUAccelerator()
    rng.restore(saved, other)


def test_per_rank_record_gives_each_rank_its_own_state():
    record = {"per_rank": [{"torch": torch.get_rng_state()}, {"torch": torch.get_rng_state()}]}
    assert rng.for_rank(record, 1) is record["per_rank"][1]
    with pytest.warns(fulmen.errors.FulmenWarning, match="rank 0's states"):
        assert rng.for_rank(record, 5) is record["per_rank"][0]


def test_batch_copies_ask_the_accelerator_whether_to_block():
    strategy = SingleDeviceStrategy(accelerator=GeneratorAccelerator())
    strategy.fill_defaults()
    batch = (torch.ones(2), {"y": torch.zeros(2)})
    moved = strategy.batch_to_device(batch)
    assert torch.equal(moved[0], batch[0]) and torch.equal(moved[1]["y"], batch[1]["y"])
    source = (CORE / "utilities" / "apply.py").read_text()
    assert '"cuda"' not in source and '"xla"' not in source


class RequeueingEnvironment(ClusterEnvironment):
    name = "requeueing_test"

    def __init__(self, record: Path) -> None:
        self.record = record

    def requeue(self):
        self.record.write_text("requeued")
        return "requeued by the test scheduler"


def test_preemption_asks_the_cluster_environment_to_requeue(tmp_path):
    from fulmen.trainer import preemption

    record = tmp_path / "requeue.txt"
    trainer = fulmen.Trainer(plugins=[RequeueingEnvironment(record)], logger=False, enable_progress_bar=False)
    assert preemption.requeue(trainer) == "requeued by the test scheduler"
    assert record.read_text() == "requeued"
    assert ClusterEnvironment().requeue() is None  # no scheduler, no queue


class NoGradOnly(SingleDeviceStrategy):
    supports_inference_mode = False


class ModeRecorder(fulmen.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.modes = []

    def validation_step(self, batch, batch_idx):
        self.modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("strategy, expected", [(SingleDeviceStrategy, (True, False)), (NoGradOnly, (False, False))])
def test_the_strategy_decides_the_evaluation_context(tmp_path, strategy, expected):
    model = ModeRecorder()
    trainer = fulmen.Trainer(strategy=strategy(), logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.validate(model, DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2), verbose=False)
    assert model.modes == [expected, expected]


def test_sync_batchnorm_on_a_strategy_without_it_is_a_clear_error():
    with pytest.raises(FulmenConfigError, match="cannot synchronise batch-norm statistics"):
        fulmen.Trainer(strategy=SingleDeviceStrategy(), sync_batchnorm=True, logger=False)


def test_fsdp_refuses_sync_batchnorm_instead_of_ignoring_it():
    fulmen_fsdp = pytest.importorskip("fulmen_fsdp")
    with pytest.raises(FulmenConfigError, match="sync_batchnorm=True is not supported by the fsdp strategy"):
        fulmen_fsdp.FSDPStrategy().enable_sync_batchnorm()


def test_fulmen_launchers_follow_the_launcher_protocol():
    from fulmen.strategies.launchers import MultiprocessingLauncher, SubprocessScriptLauncher

    strategy = fulmen.strategies.DDPStrategy()
    in_place, workers = SubprocessScriptLauncher(strategy), MultiprocessingLauncher(strategy, "spawn")
    assert isinstance(in_place, Launcher) and isinstance(workers, Launcher)
    assert not runs_in_workers(in_place) and runs_in_workers(workers) and not runs_in_workers(None)


def test_strategy_base_classes_are_exported_for_third_parties():
    from fulmen import strategies

    for name in ("Strategy", "SingleDeviceStrategy", "DDPStrategy", "SupportsNoBackwardSync", "SupportsSyncBatchNorm", "Launcher"):
        assert name in strategies.__all__ and getattr(strategies, name) is not None


def test_built_in_callbacks_read_only_public_trainer_attributes():
    """What a built-in callback may do, a third-party callback can do too."""
    offenders = []
    for path in sorted((CORE / "callbacks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id == "trainer"
            ):
                offenders.append(f"{path.name}:{node.lineno} trainer.{node.attr}")
    assert not offenders, offenders
