"""fulmen.Fabric in a hand-written loop: setup, backward, clipping, precision, state, logging."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.fabric.wrappers import DeviceDataLoader, FabricModule, FabricOptimizer
from fulmen.loggers import CSVLogger


def _fabric(**kwargs) -> fulmen.Fabric:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    return fulmen.Fabric(**kwargs)


def _model_and_optimizer(seed: int = 0, momentum: float = 0.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum)


def _loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_hand_written_loop_trains(tmp_path):
    fabric = _fabric()
    model, optimizer = _model_and_optimizer()
    model, optimizer = fabric.setup(model, optimizer)
    assert isinstance(model, FabricModule) and isinstance(optimizer, FabricOptimizer)
    train = fabric.setup_dataloaders(loader())
    assert isinstance(train, DeviceDataLoader) and len(train) == 8
    losses = []
    for _ in range(5):
        for batch in train:
            optimizer.zero_grad()
            loss = _loss(model, batch)
            fabric.backward(loss)
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    # The original module is reachable and holds the trained weights.
    assert model.module[0].weight is next(model.parameters())
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_setup_dataloaders_moves_and_converts_batches():
    fabric = _fabric(precision="64-true")
    first, second = fabric.setup_dataloaders(loader(n=16), loader(n=8))
    x, y = next(iter(first))
    assert x.device == fabric.device and x.dtype == torch.float64 and y.dtype == torch.float64
    assert len(second) == 1
    raw = fabric.setup_dataloaders(loader(n=16), move_to_device=False)
    assert next(iter(raw))[0].dtype == torch.float32


def test_setup_twice_is_refused():
    fabric = _fabric()
    model, optimizer = _model_and_optimizer()
    model, optimizer = fabric.setup(model, optimizer)
    with pytest.raises(FulmenConfigError, match="already set up"):
        fabric.setup(model)
    with pytest.raises(FulmenConfigError, match="already set up"):
        fabric.setup_optimizer(optimizer)


def _with_gradients(fabric):
    model, optimizer = _model_and_optimizer()
    model, optimizer = fabric.setup(model, optimizer)
    x, y = torch.randn(16, 8), torch.randn(16, 1) * 100
    fabric.backward(nn.functional.mse_loss(model(x), y))
    return model, optimizer


def test_clip_gradients_by_norm():
    fabric = _fabric()
    model, optimizer = _with_gradients(fabric)
    grads = [p.grad for p in model.parameters()]
    before = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert before > 1.0
    returned = fabric.clip_gradients(model, optimizer, max_norm=1.0)
    assert torch.allclose(returned, before)
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert after == pytest.approx(1.0, rel=1e-4)


def test_clip_gradients_by_value():
    fabric = _fabric()
    model, optimizer = _with_gradients(fabric)
    assert max(p.grad.abs().max() for p in model.parameters()) > 0.01
    assert fabric.clip_gradients(model, optimizer, clip_val=0.01) is None
    assert max(p.grad.abs().max() for p in model.parameters()) <= 0.01


@pytest.mark.parametrize("kwargs", [{}, {"clip_val": 1.0, "max_norm": 1.0}])
def test_clip_gradients_needs_exactly_one(kwargs):
    fabric = _fabric()
    model, optimizer = _with_gradients(fabric)
    with pytest.raises(FulmenConfigError, match="exactly one"):
        fabric.clip_gradients(model, optimizer, **kwargs)


def test_autocast_and_module_forward_under_bf16_mixed():
    fabric = _fabric(precision="bf16-mixed")
    layer = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with fabric.autocast():
        assert layer(x).dtype == torch.bfloat16
    assert layer(x).dtype == torch.float32
    model = fabric.setup(nn.Linear(4, 4))
    assert model(x).dtype == torch.bfloat16
    assert model.module.weight.dtype == torch.float32


def test_autocast_is_a_no_op_in_32_true():
    fabric = _fabric()
    with fabric.autocast():
        assert nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


def test_no_backward_sync_is_a_working_no_op_on_one_device():
    fabric = _fabric()
    model, _ = _model_and_optimizer()
    model = fabric.setup(model)
    x, y = torch.randn(8, 8), torch.randn(8, 1)
    with fabric.no_backward_sync(model):
        fabric.backward(nn.functional.mse_loss(model(x), y))
    once = [p.grad.clone() for p in model.parameters()]
    with fabric.no_backward_sync(model, enabled=False):
        fabric.backward(nn.functional.mse_loss(model(x), y))
    for grad, p in zip(once, model.parameters()):
        assert torch.allclose(p.grad, 2 * grad)  # gradients accumulate as usual


def test_init_module_under_bf16_true():
    fabric = _fabric(precision="bf16-true")
    with fabric.init_module():
        layer = nn.Linear(4, 4)
    assert layer.weight.dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32
    model = fabric.setup(nn.Linear(4, 4))
    assert model.module.weight.dtype == torch.bfloat16
    assert model(torch.randn(2, 4)).dtype == torch.bfloat16


def test_init_module_in_32_true_changes_nothing():
    with _fabric().init_module():
        assert nn.Linear(2, 2).weight.dtype == torch.float32


# ---------------------------------------------------------------------------- save / load
def _train_a_bit(fabric, model, optimizer):
    for batch in fabric.setup_dataloaders(loader(n=16)):
        optimizer.zero_grad()
        fabric.backward(_loss(model, batch))
        optimizer.step()


def test_save_and_load_restore_in_place(tmp_path):
    fabric = _fabric()
    model, optimizer = fabric.setup(*_model_and_optimizer(momentum=0.9))
    _train_a_bit(fabric, model, optimizer)
    path = tmp_path / "state.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": 3})
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}
    saved_momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]

    # A fresh model and optimizer with different contents.
    fresh_model, fresh_optimizer = fabric.setup(*_model_and_optimizer(seed=1, momentum=0.9))
    state = {"model": fresh_model, "optimizer": fresh_optimizer, "step": 0}
    leftovers = fabric.load(path, state)
    assert leftovers == {}
    assert state["step"] == 3
    for key, value in fresh_model.state_dict().items():
        assert torch.equal(value, saved_weights[key])
    restored = [fresh_optimizer.state[p]["momentum_buffer"] for p in fresh_model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(restored, saved_momentum))
    # The file itself is plain data.
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "optimizer", "step", "_fulmen"}  # _fulmen: RNG states and version
    assert set(raw["_fulmen"]["rng"]["per_rank"][0]) >= {"python", "torch"}  # one state per rank


def test_load_returns_entries_not_asked_for(tmp_path):
    fabric = _fabric()
    model, optimizer = fabric.setup(*_model_and_optimizer())
    path = tmp_path / "state.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": 7, "note": "hi"})
    leftovers = fabric.load(path, {"model": model})
    assert set(leftovers) == {"optimizer", "step", "note"}
    assert leftovers["step"] == 7 and leftovers["note"] == "hi"
    everything = fabric.load(path)
    assert set(everything) == {"model", "optimizer", "step", "note"}


def test_load_strict_missing_key(tmp_path):
    fabric = _fabric()
    model, optimizer = fabric.setup(*_model_and_optimizer())
    path = tmp_path / "state.ckpt"
    fabric.save(path, {"model": model})
    with pytest.raises(FulmenCheckpointError, match="optimizer") as info:
        fabric.load(path, {"model": model, "optimizer": optimizer})
    assert "strict=False" in str(info.value)
    state = {"model": model, "optimizer": optimizer}
    assert fabric.load(path, state, strict=False) == {}


def test_load_strict_module_keys(tmp_path):
    fabric = _fabric()
    path = tmp_path / "state.ckpt"
    fabric.save(path, {"model": nn.Linear(4, 4)})
    bigger = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError, match="Missing key"):
        fabric.load(path, {"model": bigger})


def test_save_with_stateful_object(tmp_path):
    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    fabric = _fabric()
    counter = Counter()
    counter.n = 5
    fabric.save(tmp_path / "c.ckpt", {"counter": counter})
    other = Counter()
    fabric.load(tmp_path / "c.ckpt", {"counter": other})
    assert other.n == 5


# ---------------------------------------------------------------------------- collectives
def test_collectives_on_one_process():
    fabric = _fabric()
    assert fabric.world_size == 1 and fabric.global_rank == 0 and fabric.is_global_zero
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(fabric.all_reduce(t), t)
    assert torch.equal(fabric.all_reduce(t, reduce_op="sum"), t)
    assert torch.equal(fabric.all_reduce(3.0), torch.tensor(3.0))
    reduced = fabric.all_reduce({"a": torch.tensor(1.0), "b": [torch.tensor(2.0)]})
    assert reduced["a"] == 1.0 and reduced["b"][0] == 2.0
    gathered = fabric.all_gather(t)
    assert gathered.shape == (1, 2) and torch.equal(gathered[0], t)
    assert fabric.all_gather({"x": torch.tensor(4.0)})["x"].shape == (1,)
    obj = {"config": [1, 2]}
    assert fabric.broadcast(obj) == obj
    fabric.barrier()
    fabric.barrier("named")


# ---------------------------------------------------------------------------- logging, launch, call
def test_log_and_log_dict_to_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1000)
    fabric = _fabric(loggers=logger)
    assert fabric.logger is logger and fabric.loggers == [logger]
    fabric.log("loss", torch.tensor(0.5), step=0)
    fabric.log_dict({"loss": 0.25, "acc": torch.tensor(0.75)}, step=1)
    logger.finalize("success")
    with open(logger.metrics_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"step": "0", "acc": "", "loss": "0.5"},
        {"step": "1", "acc": "0.75", "loss": "0.25"},
    ]


def test_log_without_logger_is_silent():
    _fabric().log("loss", 1.0)


def test_launch_runs_function_with_fabric():
    fabric = _fabric()
    seen = {}

    def main(f, a, b=0):
        seen["fabric"] = f
        return a + b

    assert fabric.launch(main, 1, b=2) == 3
    assert seen["fabric"] is fabric
    assert fabric.launch() is None


def test_call_runs_hooks_on_callbacks():
    class Recorder:
        def __init__(self):
            self.calls = []

        def on_x(self, *args, **kwargs):
            self.calls.append((args, kwargs))

    class NoHooks:
        pass

    first, second = Recorder(), Recorder()
    fabric = _fabric(callbacks=[first, NoHooks(), second])
    fabric.call("on_x", 1, y=2)
    fabric.call("on_missing", 3)
    assert first.calls == [((1,), {"y": 2})]
    assert second.calls == [((1,), {"y": 2})]
    single = Recorder()
    _fabric(callbacks=single).call("on_x")
    assert single.calls == [((), {})]


def test_seed_everything_is_reproducible():
    fabric = _fabric()
    fabric.seed_everything(123)
    a = torch.randn(3)
    fabric.seed_everything(123)
    assert torch.equal(a, torch.randn(3))


# ---------------------------------------------------------------------------- parity with Trainer
def test_fabric_loop_matches_trainer(tmp_path):
    epochs = 2

    torch.manual_seed(0)
    trainer_model = BoringModule(lr=0.05)
    initial = trainer_model.layer.weight.detach().clone()
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, enable_checkpointing=False, logger=False)
    trainer.fit(trainer_model, loader(shuffle=False))

    torch.manual_seed(0)
    fabric_model = BoringModule(lr=0.05)
    assert torch.equal(fabric_model.layer.weight, initial)  # same start
    fabric = _fabric()
    model, optimizer = fabric.setup(fabric_model, torch.optim.SGD(fabric_model.parameters(), lr=0.05))
    train = fabric.setup_dataloaders(loader(shuffle=False))
    for _ in range(epochs):
        for x, y in train:
            loss = nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    assert trainer.global_step == epochs * 8
    for (name, a), (_, b) in zip(trainer_model.state_dict().items(), fabric_model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(trainer_model.layer.weight, initial)  # training happened
