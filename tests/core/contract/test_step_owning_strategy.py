"""The strategy contract is enough for a backend that owns the step (``engine_strategy``):
the Trainer and Fabric drive it through public methods only, training matches a plain
PyTorch loop bit for bit, its checkpoints are directories that ``ckpt_path="last"``
finds and resumes from exactly, and every stage ends with ``teardown``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks import ModelCheckpoint

from engine_strategy import ENGINE_FILES, EnginePlugin, EngineStrategy

ACCUMULATE = 2
CLIP = 0.05
BATCHES = 6  # per epoch; a multiple of ACCUMULATE so the engine's count and the loop agree


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(BATCHES * 4, 8, generator=g)
    return TensorDataset(x, x @ torch.randn(8, 2, generator=g))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))


class Regressor(fulmen.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _reference(epochs: int) -> list:
    """The same training written as a plain PyTorch loop."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for i, (x, y) in enumerate(DataLoader(_data(), batch_size=4)):
            (nn.functional.mse_loss(net(x), y) / ACCUMULATE).backward()
            if (i + 1) % ACCUMULATE == 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
                opt.step()
                opt.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in net.parameters()]


def _trainer(root: Path, plugin: EnginePlugin, epochs: int) -> fulmen.Trainer:
    return fulmen.Trainer(
        strategy="toy_engine", plugins=[plugin], max_epochs=epochs, accumulate_grad_batches=ACCUMULATE,
        gradient_clip_val=CLIP, default_root_dir=str(root), logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=str(root / "ckpts"), save_last=True, save_top_k=-1)],
    )


def test_the_trainer_drives_an_engine_that_owns_backward_step_clipping_and_accumulation(tmp_path):
    plugin = EnginePlugin(accumulate=ACCUMULATE)
    trainer = _trainer(tmp_path, plugin, epochs=2)
    model = Regressor()
    trainer.fit(model, DataLoader(_data(), batch_size=4), DataLoader(_data(), batch_size=4))
    (strategy,) = plugin.created
    assert isinstance(trainer.strategy, EngineStrategy) and trainer.strategy is strategy
    # The engine counted every micro-batch and stepped at each accumulation boundary.
    assert strategy.engine.micro_steps == 2 * BATCHES
    assert strategy.engine.global_steps == trainer.global_step == 2 * BATCHES // ACCUMULATE
    assert strategy.boundaries == [(i + 1) % ACCUMULATE == 0 for i in range(BATCHES)] * 2
    for got, want in zip(model.parameters(), _reference(epochs=2)):
        assert torch.equal(got.detach(), want)
    assert strategy.calls[0] == "setup_module_and_optimizers"
    assert "evaluation_context" in strategy.calls  # validation ran inside the strategy's context
    assert strategy.calls[-1] == "teardown"
    # Its checkpoints are directories in the engine's own layout.
    last = tmp_path / "ckpts" / "last.ckpt"
    assert last.is_dir() and sorted(p.name for p in last.iterdir()) == sorted(ENGINE_FILES)


def test_ckpt_path_last_resolves_to_the_engine_directory_and_resumes_exactly(tmp_path):
    first = _trainer(tmp_path, EnginePlugin(accumulate=ACCUMULATE), epochs=1)
    first.fit(Regressor(), DataLoader(_data(), batch_size=4))
    assert (tmp_path / "ckpts" / "last.ckpt").is_dir()

    plugin = EnginePlugin(accumulate=ACCUMULATE)
    second = _trainer(tmp_path, plugin, epochs=2)
    model = Regressor()  # fresh weights: everything must come from the directory
    second.fit(model, DataLoader(_data(), batch_size=4), ckpt_path="last")
    assert second.global_step == 2 * BATCHES // ACCUMULATE
    assert plugin.created[0].engine.counters() == {"micro_steps": 2 * BATCHES, "global_steps": second.global_step}
    for got, want in zip(model.parameters(), _reference(epochs=2)):
        assert torch.equal(got.detach(), want)


def test_ckpt_path_last_does_not_take_a_file_inside_a_checkpoint_directory_for_a_checkpoint(tmp_path):
    directory = tmp_path / "run" / "epoch=0.ckpt"
    directory.mkdir(parents=True)
    (directory / "shard-0.ckpt").write_bytes(b"part of the directory checkpoint")
    (tmp_path / "run" / "plain.ckpt").write_bytes(b"x")
    found = fulmen.strategies.SingleDeviceStrategy().find_checkpoints(tmp_path)
    assert sorted(p.name for p in found) == ["epoch=0.ckpt", "plain.ckpt"]


def test_fabric_drives_the_same_engine(tmp_path):
    plugin = EnginePlugin(accumulate=1)
    fabric = fulmen.Fabric(strategy="toy_engine", plugins=[plugin])
    net = _net()
    model, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    (strategy,) = plugin.created
    assert strategy.calls == ["setup_module_and_optimizers"]
    for x, y in fabric.setup_dataloaders(DataLoader(_data(), batch_size=4)):
        fabric.backward(nn.functional.mse_loss(model(x), y))
        optimizer.step()
    assert strategy.engine.global_steps == strategy.engine.micro_steps == BATCHES
    fabric.save(tmp_path / "state.ckpt", {"model": model, "optimizer": optimizer, "epoch": 1})
    assert (tmp_path / "state.ckpt").is_dir()
    state = {"model": model, "optimizer": optimizer, "epoch": 0}
    fabric.load(tmp_path / "state.ckpt", state)
    assert state["epoch"] == 1


def test_an_engine_that_clips_by_norm_only_refuses_clipping_by_value(tmp_path):
    trainer = fulmen.Trainer(
        strategy="toy_engine", plugins=[EnginePlugin()], max_epochs=1, gradient_clip_val=0.1,
        gradient_clip_algorithm="value", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    with pytest.raises(fulmen.errors.FulmenConfigError, match="clips by norm only"):
        trainer.fit(Regressor(), DataLoader(_data(), batch_size=4))


class CountingOldSignature(fulmen.strategies.SingleDeviceStrategy):
    """A strategy written against 0.1.0: ``optimizer_step`` without ``boundary``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = 0

    def optimizer_step(self, optimizer, closure=None):
        self.steps += 1
        return super().optimizer_step(optimizer, closure)


def test_a_strategy_without_the_boundary_parameter_is_called_at_boundaries_only(tmp_path):
    strategy = CountingOldSignature()
    trainer = fulmen.Trainer(
        strategy=strategy, max_epochs=1, accumulate_grad_batches=ACCUMULATE, gradient_clip_val=CLIP,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    model = Regressor()
    trainer.fit(model, DataLoader(_data(), batch_size=4))
    assert strategy.steps == trainer.global_step == BATCHES // ACCUMULATE
    for got, want in zip(model.parameters(), _reference(epochs=1)):
        assert torch.equal(got.detach(), want)
