"""Precision modes on the CPU through the Trainer (and Fabric), plus a CUDA-only scaler test."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.callbacks import ModelCheckpoint
from fulmen.errors import FulmenConfigError
from fulmen.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision


class DtypeProbe(BoringModule):
    """Records the dtypes seen inside training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.layer(x)
        self.seen.append({"input": x.dtype, "param": self.layer.weight.dtype, "output": out.dtype})
        loss = nn.functional.mse_loss(out.float(), y.float())
        self.log("train_loss", loss)
        return loss


def _fit(tmp_path, precision, **kwargs):
    model = DtypeProbe()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, precision=precision, **kwargs)
    trainer.fit(model, loader())
    return trainer, model


def test_32_true(tmp_path):
    trainer, model = _fit(tmp_path, "32-true")
    assert trainer.precision == "32-true"
    assert model.seen[0] == {"input": torch.float32, "param": torch.float32, "output": torch.float32}


def test_64_true_params_and_inputs_are_float64(tmp_path):
    trainer, model = _fit(tmp_path, "64-true")
    assert isinstance(trainer.strategy.precision, DoublePrecision)
    assert model.seen[0] == {"input": torch.float64, "param": torch.float64, "output": torch.float64}
    assert model.layer.weight.dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32


def test_bf16_mixed_autocasts_forward_and_keeps_float32_params(tmp_path):
    trainer, model = _fit(tmp_path, "bf16-mixed")
    assert isinstance(trainer.strategy.precision, MixedPrecision)
    assert model.seen[0] == {"input": torch.float32, "param": torch.float32, "output": torch.bfloat16}
    assert model.layer.weight.dtype == torch.float32
    assert trainer.strategy.precision.scaler is None
    # Outside the step autocast is off again.
    assert model.layer(torch.randn(2, 8)).dtype == torch.float32


def test_bf16_mixed_trains(tmp_path):
    model = BoringModule()
    before = model.layer.weight.detach().clone()
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=4, precision="bf16-mixed").fit(model, loader())
    assert not torch.equal(before, model.layer.weight)
    assert model.layer.weight.dtype == torch.float32


def test_bf16_true_params_and_inputs_are_bfloat16(tmp_path):
    trainer, model = _fit(tmp_path, "bf16-true")
    assert isinstance(trainer.strategy.precision, HalfPrecision)
    assert model.seen[0] == {"input": torch.bfloat16, "param": torch.bfloat16, "output": torch.bfloat16}
    assert model.layer.weight.dtype == torch.bfloat16


def test_eval_loop_uses_the_precision(tmp_path):
    class EvalProbe(BoringModule):
        def validation_step(self, batch, batch_idx):
            self.val_dtype = self.layer(batch[0]).dtype

    model = EvalProbe()
    quiet_trainer(tmp_path, precision="bf16-mixed").validate(model, loader(n=8), verbose=False)
    assert model.val_dtype == torch.bfloat16


@pytest.mark.parametrize("precision", ["16-mixed", "16-true", 16, "16", "half"])
def test_float16_modes_need_cuda(tmp_path, precision):
    with pytest.raises(FulmenConfigError) as info:
        quiet_trainer(tmp_path, precision=precision)
    message = str(info.value)
    assert "CUDA" in message
    assert "bf16-mixed" in message
    with pytest.raises(FulmenConfigError, match="CUDA"):
        fulmen.Fabric(accelerator="cpu", precision=precision)


@pytest.mark.parametrize(
    "alias, name, cls",
    [
        (32, "32-true", Precision),
        ("32", "32-true", Precision),
        (64, "64-true", DoublePrecision),
        ("64", "64-true", DoublePrecision),
        ("double", "64-true", DoublePrecision),
        ("bf16", "bf16-mixed", MixedPrecision),
        ("bf16-mixed", "bf16-mixed", MixedPrecision),
        ("bf16-true", "bf16-true", HalfPrecision),
        (None, "32-true", Precision),
    ],
)
def test_lightning_aliases(tmp_path, alias, name, cls):
    trainer = quiet_trainer(tmp_path, precision=alias)
    assert trainer.precision == name
    assert type(trainer.strategy.precision) is cls
    assert fulmen.Fabric(accelerator="cpu", precision=alias).precision.name == name


def test_unknown_precision_lists_the_available_ones(tmp_path):
    with pytest.raises(FulmenConfigError) as info:
        quiet_trainer(tmp_path, precision="8-bit")
    message = str(info.value)
    assert "8-bit" in message and "bf16-mixed" in message


def test_precision_object_is_used_as_is(tmp_path):
    precision = DoublePrecision()
    trainer = quiet_trainer(tmp_path, plugins=[precision])
    assert trainer.strategy.precision is precision


def test_precision_state_in_checkpoint_is_plain(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    _fit(tmp_path, "bf16-mixed", callbacks=[cb])
    checkpoint = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert checkpoint["precision"] == {}
    assert checkpoint["state_dict"]["layer.weight"].dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_16_mixed_scaler_state_goes_into_the_checkpoint_and_back(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer = quiet_trainer(tmp_path, accelerator="cuda", devices=1, precision="16-mixed", max_epochs=1, limit_train_batches=4, callbacks=[cb])
    model = DtypeProbe()
    trainer.fit(model, loader())
    assert model.seen[0]["output"] == torch.float16
    assert model.layer.weight.dtype == torch.float32
    scaler = trainer.strategy.precision.scaler
    assert isinstance(scaler, torch.amp.GradScaler)
    checkpoint = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    saved = checkpoint["precision"]["scaler"]
    assert saved["scale"] == scaler.get_scale()

    # A scale differing from the default shows the resume really restored it.
    checkpoint["precision"]["scaler"]["scale"] = 1024.0
    torch.save(checkpoint, tmp_path / "edited.ckpt")

    class Probe(fulmen.Callback):
        def on_train_start(self, trainer):
            self.scale = trainer.strategy.precision.scaler.get_scale()

    probe = Probe()
    resumed = quiet_trainer(
        tmp_path, accelerator="cuda", devices=1, precision="16-mixed", max_epochs=2, limit_train_batches=4, callbacks=[probe]
    )
    resumed.fit(DtypeProbe(), loader(), ckpt_path=str(tmp_path / "edited.ckpt"))
    assert probe.scale == 1024.0


@pytest.mark.parametrize("precision, dtype", [("64-true", torch.float64), ("bf16-true", torch.bfloat16)])
def test_true_modes_create_new_tensors_in_their_dtype_inside_steps(tmp_path, precision, dtype):
    """As in Lightning: inside the step the default dtype is the precision's, so a tensor
    made there (an RNN's zero state, a mask) matches the parameters."""

    class MakesTensors(BoringModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            bias = torch.zeros(x.shape[1])
            self.new_dtype = bias.dtype
            loss = nn.functional.mse_loss(self.layer(x + bias).float(), y.float())
            self.log("exact", 1.001)  # a Python float is logged without losing precision
            return loss

    model = MakesTensors()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, precision=precision)
    trainer.fit(model, loader())
    assert model.new_dtype == dtype
    assert torch.get_default_dtype() == torch.float32
    assert float(trainer.callback_metrics["exact"]) == pytest.approx(1.001, rel=1e-6)


def test_fabric_forward_under_64_true_uses_float64_defaults():
    class Forward(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 3)

        def forward(self, x):
            return self.layer(x) @ torch.eye(3)  # matmul does not promote: dtypes must match

    fabric = fulmen.Fabric(accelerator="cpu", precision="64-true")
    model = fabric.setup(Forward())
    assert model(torch.randn(2, 3)).dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32
