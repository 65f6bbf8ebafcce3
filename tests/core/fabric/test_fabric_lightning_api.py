"""The Fabric methods Lightning's documentation shows that fulmen added: print,
rank_zero_first, init_tensor, load_raw, save(filter=) and setup(scheduler=); the multi-process
behaviour with 2 real gloo ranks (lightning_api_ddp_script.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fulmen
from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.io.checkpoint_io import TorchCheckpointIO

SCRIPT = Path(__file__).resolve().parent / "lightning_api_ddp_script.py"


def _fabric(**kwargs) -> fulmen.Fabric:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    return fulmen.Fabric(**kwargs)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _train(model, optimizer, fabric, steps=3):
    for _ in range(steps):
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()


# ------------------------------------------------------------------ 2 processes
def test_print_rank_zero_first_save_filter_and_load_raw_under_two_ranks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]

    assert [r["rank_zero_only.rank"] for r in ranks] == [0, 1]
    assert ranks[0]["printed"] == "hello from 0\n" and ranks[1]["printed"] == ""
    for kind in ("global", "local"):
        # rank 0 ran the block before anyone else; rank 1 entered only after its file existed
        assert ranks[0][kind]["seen_on_entry"] is False
        assert ranks[1][kind]["seen_on_entry"] is True, kind

    saved = torch.load(tmp_path / "filtered.ckpt", weights_only=True)
    assert sorted(saved["model"]) == ["1.bias", "1.weight"] and saved["step"] == 7
    assert all(r["loaded_raw"] for r in ranks)


# ------------------------------------------------------------------ one process
def test_print_and_rank_zero_first_in_one_process(capsys, tmp_path):
    fabric = _fabric()
    fabric.print("epoch", 1, sep="=")
    assert capsys.readouterr().out == "epoch=1\n"
    with fabric.rank_zero_first():
        (tmp_path / "downloaded").write_text("x")  # nothing to wait for: the block just runs
    assert (tmp_path / "downloaded").exists()


@pytest.mark.parametrize("precision, dtype", [("64-true", torch.float64), ("bf16-true", torch.bfloat16), ("32-true", torch.float32)])
def test_init_tensor_creates_tensors_on_the_device_in_the_precisions_dtype(precision, dtype):
    fabric = _fabric(precision=precision)
    context = fabric.init_tensor()
    assert torch.empty(1).dtype == torch.float32  # nothing happens until the block is entered
    with context:
        made = torch.empty(3)
        ones = torch.ones(2, 2)
    assert made.dtype == ones.dtype == dtype
    assert made.device == ones.device == fabric.device
    assert torch.empty(1).dtype == torch.float32  # torch's default is back after the block


def test_load_raw_reads_a_plain_torch_save_into_a_module_and_an_optimizer(tmp_path):
    fabric = _fabric()
    source = _model(0)
    source_opt = torch.optim.Adam(source.parameters(), lr=0.01)
    _train(source, source_opt, fabric)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    torch.save(source_opt.state_dict(), tmp_path / "optimizer.pt")

    target = _model(1)
    target_opt = torch.optim.Adam(target.parameters(), lr=0.01)
    model, optimizer = fabric.setup(target, target_opt)
    assert not torch.equal(model.module[0].weight, source[0].weight)
    fabric.load_raw(tmp_path / "model.pt", model)
    fabric.load_raw(tmp_path / "optimizer.pt", optimizer)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    restored = target_opt.state_dict()["state"]
    assert restored.keys() == source_opt.state_dict()["state"].keys()
    assert torch.equal(restored[0]["exp_avg"], source_opt.state_dict()["state"][0]["exp_avg"])


def test_load_raw_strictness_and_what_it_refuses(tmp_path):
    fabric = _fabric()
    model = fabric.setup(_model(0))
    partial = {k: torch.zeros_like(v) for k, v in _model(0).state_dict().items() if k.startswith("0.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        fabric.load_raw(tmp_path / "partial.pt", model)
    fabric.load_raw(tmp_path / "partial.pt", model, strict=False)
    assert torch.count_nonzero(model.module[0].weight) == 0 and torch.count_nonzero(model.module[2].weight) > 0

    fabric.save(tmp_path / "fabric.ckpt", {"model": model, "step": 1})
    with pytest.raises(FulmenCheckpointError, match=r"written by fabric.save.*fabric.load"):
        fabric.load_raw(tmp_path / "fabric.ckpt", model)
    with pytest.raises(FulmenConfigError, match="module or an optimizer"):
        fabric.load_raw(tmp_path / "partial.pt", {"model": model})


def test_load_raw_checks_a_fulmen_written_state_dict_and_refuses_damage(tmp_path):
    fabric = _fabric()
    model = fabric.setup(_model(0))
    path = tmp_path / "checked.pt"
    TorchCheckpointIO().save_checkpoint({k: torch.ones_like(v) for k, v in _model(0).state_dict().items()}, path)
    fabric.load_raw(path, model)
    assert all(bool((p == 1).all()) for p in model.module.parameters())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FulmenCheckpointError, match="corrupted"):
        fabric.load_raw(path, model)


def test_save_filter_keeps_only_the_accepted_entries_and_load_restores_them(tmp_path):
    fabric = _fabric()
    model, optimizer = fabric.setup(_model(0), torch.optim.SGD(_model(0).parameters(), lr=0.1))
    path = tmp_path / "adapter.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": 5},
                filter={"model": lambda name, value: name.startswith("2.")})
    saved = torch.load(path, weights_only=True)
    assert sorted(saved["model"]) == ["2.bias", "2.weight"]
    assert "state" in saved["optimizer"] and saved["step"] == 5  # unfiltered keys as always

    other = fabric.setup(_model(1))
    before = other.module[0].weight.detach().clone()
    fabric.load(path, {"model": other}, strict=False)
    assert torch.equal(other.module[2].weight, model.module[2].weight)
    assert torch.equal(other.module[0].weight, before)  # not saved, so not touched


def test_save_filter_errors_name_the_problem(tmp_path):
    fabric = _fabric()
    model = fabric.setup(_model(0))
    state = {"model": model, "step": 1}
    path = tmp_path / "x.ckpt"
    with pytest.raises(FulmenConfigError, match="filter must be a dict"):
        fabric.save(path, state, filter=lambda name, value: True)
    with pytest.raises(FulmenConfigError, match=r"names \['modle'\].*keys are \['model', 'step'\]"):
        fabric.save(path, state, filter={"modle": lambda name, value: True})
    with pytest.raises(FulmenConfigError, match=r"\['model'\] is 3, not a function"):
        fabric.save(path, state, filter={"model": 3})
    with pytest.raises(FulmenConfigError, match=r"state\['step'\] is a int"):
        fabric.save(path, state, filter={"step": lambda name, value: True})
    assert not path.exists()


def test_setup_with_a_scheduler_returns_it_stepping_the_set_up_optimizer():
    fabric = _fabric()
    model = _model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    out = fabric.setup(model, optimizer, scheduler=scheduler)
    assert len(out) == 3
    fabric_model, fabric_optimizer, returned = out
    assert returned is scheduler
    _train(fabric_model, fabric_optimizer, fabric, steps=1)
    returned.step()
    assert fabric_optimizer.param_groups[0]["lr"] == 0.5

    unmoved = fabric.setup(_model(0), torch.optim.SGD(_model(0).parameters(), lr=1.0), move_to_device=False)
    assert len(unmoved) == 2  # no scheduler given: (model, optimizer) as before
    with pytest.raises(FulmenConfigError, match="needs the scheduler's optimizer"):
        fabric.setup(_model(0), scheduler=scheduler)
