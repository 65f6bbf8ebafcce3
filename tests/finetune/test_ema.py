"""EMAWeightAveraging: the average equals a hand computation (decay, every n steps, warmup),
validation runs on the averaged weights and training continues on the raw ones bit for bit,
checkpoints hold the average (and the training weights for resume), a resumed run is
identical to a straight one, two DDP processes keep identical averages, bad settings and
sharded parameters are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import BoringModule, loader, quiet_trainer
from torch import nn

import fulmen
from fulmen.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from fulmen.errors import FulmenConfigError


class Recorder(Callback):
    """Listed after the EMA callback: the raw weights after every optimizer step, and what
    the module holds while validation runs."""

    def __init__(self) -> None:
        self.steps, self.validated, self.after_validation = [], [], []

    def on_train_batch_end(self, trainer, module) -> None:
        self.steps.append([p.detach().clone() for p in module.parameters()])

    def on_validation_batch_start(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.validated.append([p.detach().clone() for p in module.parameters()])

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.after_validation.append([p.detach().clone() for p in module.parameters()])


def _fit(tmp_path, callbacks, max_epochs=3, model=None, ckpt_path=None, val=True, **kwargs):
    torch.manual_seed(0)
    model = model or BoringModule(lr=0.1)
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False, **kwargs)
    trainer.fit(model, loader(n=32, batch_size=8, shuffle=True), loader(n=16, batch_size=8) if val else None,
                ckpt_path=ckpt_path)
    return trainer, model


def _hand_ema(snapshots, decay, every=1, start=0, warmup=False):
    """The average computed by hand in float64 from the per-step raw weights."""
    average, n = None, 0
    for step_idx, weights in enumerate(snapshots):
        if step_idx < start or step_idx % every:
            continue
        if average is None:
            average = [w.double() for w in weights]
        else:
            d = min(decay, (1 + n) / (10 + n)) if warmup else decay
            average = [d * a + (1 - d) * w.double() for a, w in zip(average, weights)]
        n += 1
    return average, n


@pytest.mark.parametrize("kwargs", [dict(decay=0.9), dict(decay=0.8, update_every_n_steps=3, update_starting_at_step=2),
                                    dict(decay=0.99, warmup=True)])
def test_average_equals_a_hand_computation(tmp_path, kwargs):
    ema, recorder = EMAWeightAveraging(**kwargs), Recorder()
    _fit(tmp_path, [ema, recorder], enable_checkpointing=False, val=False)
    expected, n = _hand_ema(recorder.steps, kwargs["decay"], kwargs.get("update_every_n_steps", 1),
                            kwargs.get("update_starting_at_step", 0), kwargs.get("warmup", False))
    assert ema.num_updates == n and n >= 3
    averaged = list(ema.averaged_state_dict().values())
    for got, want, raw in zip(averaged, expected, recorder.steps[-1]):
        assert torch.allclose(got.double(), want, atol=1e-6)
        assert not torch.allclose(got, raw, atol=1e-4), "the average must differ from the last weights"


def test_module_keeps_the_average_after_fit(tmp_path):
    ema = EMAWeightAveraging(decay=0.9)
    _, model = _fit(tmp_path, [ema], enable_checkpointing=False, val=False)
    for p, a in zip(model.parameters(), ema.averaged_state_dict().values()):
        assert torch.equal(p, a)


def test_validation_uses_the_average_and_training_resumes_with_the_raw_weights(tmp_path):
    ema, recorder = EMAWeightAveraging(decay=0.5), Recorder()
    _fit(tmp_path, [ema, recorder], max_epochs=2, enable_checkpointing=False, limit_train_batches=4)
    # epoch 0's validation saw the average of steps 0..3 (decay 0.5), not the raw weights
    expected, _ = _hand_ema(recorder.steps[:4], 0.5)
    for seen, want, raw in zip(recorder.validated[0], expected, recorder.steps[3]):
        assert torch.allclose(seen.double(), want, atol=1e-6)
        assert not torch.equal(seen, raw)
    # after validation the module holds exactly the raw weights again
    for back, raw in zip(recorder.after_validation[0], recorder.steps[3]):
        assert torch.equal(back, raw)


def test_training_is_unchanged_by_validating_under_the_average(tmp_path):
    recorders = []
    for use in (True, False):
        recorder = Recorder()
        _fit(tmp_path / str(use), [EMAWeightAveraging(decay=0.5, use_ema_for_validation=use), recorder],
             enable_checkpointing=False, limit_train_batches=4)
        recorders.append(recorder)
    for a, b in zip(recorders[0].steps, recorders[1].steps):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # without use_ema_for_validation validation sees the raw weights
    for seen, raw in zip(recorders[1].validated[0], recorders[1].steps[3]):
        assert torch.equal(seen, raw)


def test_checkpoint_holds_the_average_and_the_training_weights(tmp_path):
    class SaveAtStep4(Callback):
        """Listed before the EMA callback: saves inside on_train_batch_end before its update
        (ModelCheckpoint itself always runs after the other callbacks)."""

        def on_train_batch_end(self, trainer):
            if trainer.global_step == 4:
                trainer.save_checkpoint(tmp_path / "ckpts" / "step=4.ckpt")

    ema = EMAWeightAveraging(decay=0.7)
    recorder = Recorder()
    _fit(tmp_path, [SaveAtStep4(), ema, recorder], max_epochs=1, val=False, enable_checkpointing=False)
    saved = torch.load(tmp_path / "ckpts" / "step=4.ckpt", weights_only=True)
    expected, n = _hand_ema(recorder.steps, 0.7)
    assert saved["callbacks"]["EMAWeightAveraging"]["num_updates"] == n == 4
    names = [name for name, _ in BoringModule().named_parameters()]
    for name, want, raw in zip(names, expected, recorder.steps[-1]):
        assert torch.allclose(saved["state_dict"][name].double(), want, atol=1e-6)
        assert torch.equal(saved["current_model_state"][name], raw)
    reloaded = BoringModule.load_from_checkpoint(tmp_path / "ckpts" / "step=4.ckpt")
    for p, want in zip(reloaded.parameters(), expected):
        assert torch.allclose(p.double(), want, atol=1e-6)


@pytest.mark.parametrize("step", [5, 8])  # mid-epoch / at an epoch's end (with validation between)
def test_exact_resume(tmp_path, step):
    def callbacks():
        ema = EMAWeightAveraging(decay=0.8, update_every_n_steps=2, warmup=True, update_starting_at_epoch=1)
        return ema, [ema, ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=step,
                                          save_top_k=-1)]

    ema_a, cbs = callbacks()
    _, straight = _fit(tmp_path / "a", cbs, max_epochs=4, limit_train_batches=4)
    ema_b, cbs = callbacks()
    _, resumed = _fit(tmp_path / "b", cbs, max_epochs=4, limit_train_batches=4,
                      ckpt_path=str(tmp_path / "ckpts" / f"step={step}.ckpt"))
    assert ema_a.num_updates == ema_b.num_updates
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(ema_a.averaged_state_dict().items(), ema_b.averaged_state_dict().values()):
        assert torch.equal(a, b), name


def test_batch_norm_buffers_are_averaged_and_counters_left_alone(tmp_path):
    class Norm(BoringModule):
        def __init__(self):
            super().__init__(lr=0.1)
            self.layer = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    ema = EMAWeightAveraging(decay=0.9)
    _, model = _fit(tmp_path, [ema], model=Norm(), enable_checkpointing=False, val=False)
    averaged = ema.averaged_state_dict()
    assert "layer.1.running_mean" in averaged and "layer.1.num_batches_tracked" not in averaged
    assert int(model.layer[1].num_batches_tracked) == 12
    assert "layer.1.running_mean" not in EMAWeightAveraging(use_buffers=False)._names


class FrozenBackbone(BoringModule):
    """A frozen backbone under a trainable head; the optimizer holds every parameter, so
    unfreezing the backbone (``requires_grad_``) is all it takes to train it."""

    def __init__(self):
        super().__init__(lr=0.1)
        self.layer = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 1))
        self.layer[0].requires_grad_(False)


class Unfreeze(Callback):
    """Listed after the EMA callback: unfreezes the backbone at the start of ``epoch``, and
    records the backbone's raw weights after every optimizer step."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.steps = epoch, []

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch >= self.epoch:
            module.layer[0].requires_grad_(True)

    def on_train_batch_end(self, trainer, module) -> None:
        self.steps.append([p.detach().clone() for p in module.layer[0].parameters()])


def test_frozen_parameters_are_not_copied(tmp_path):
    ema = EMAWeightAveraging(decay=0.9)
    model = FrozenBackbone()
    frozen = {n: p.detach().clone() for n, p in model.layer[0].named_parameters()}
    trainer, model = _fit(tmp_path, [ema], model=model, max_epochs=2, val=False)
    assert set(ema.averaged_state_dict()) == {"layer.1.weight", "layer.1.bias"}
    assert sum(t.numel() * t.element_size() for t in ema._average) == (16 + 1) * 4  # the head only
    assert all(torch.equal(frozen[n], p) for n, p in model.layer[0].named_parameters())
    saved = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)["state_dict"]
    assert torch.equal(saved["layer.0.weight"], frozen["weight"])  # the others as they are
    assert torch.equal(saved["layer.1.weight"], ema.averaged_state_dict()["layer.1.weight"])


def test_unfrozen_parameters_join_the_average_with_their_current_value(tmp_path):
    ema, unfreeze = EMAWeightAveraging(decay=0.8), Unfreeze(epoch=1)
    _fit(tmp_path, [ema, unfreeze], model=FrozenBackbone(), max_epochs=3, val=False, limit_train_batches=4,
         enable_checkpointing=False)
    assert {"layer.0.weight", "layer.0.bias"} <= set(ema.averaged_state_dict())
    expected, _ = _hand_ema(unfreeze.steps[4:], decay=0.8)  # from the first update after the unfreeze
    averaged = ema.averaged_state_dict()
    for name, want in zip(("layer.0.weight", "layer.0.bias"), expected):
        assert torch.allclose(averaged[name].double(), want, atol=1e-6), name
    assert not torch.equal(averaged["layer.0.weight"], unfreeze.steps[4][0])  # it did average


def test_exact_resume_after_an_unfreeze(tmp_path):
    def callbacks():
        ema = EMAWeightAveraging(decay=0.8)
        return ema, [ema, Unfreeze(epoch=1), ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}",
                                                            every_n_train_steps=6, save_top_k=-1)]

    ema_a, cbs = callbacks()
    _, straight = _fit(tmp_path / "a", cbs, max_epochs=3, limit_train_batches=4, model=FrozenBackbone())
    ema_b, cbs = callbacks()
    _, resumed = _fit(tmp_path / "b", cbs, max_epochs=3, limit_train_batches=4, model=FrozenBackbone(),
                      ckpt_path=str(tmp_path / "ckpts" / "step=6.ckpt"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert ema_a.averaged_state_dict().keys() == ema_b.averaged_state_dict().keys()
    for name, a in ema_a.averaged_state_dict().items():
        assert torch.equal(a, ema_b.averaged_state_dict()[name]), name


@pytest.mark.parametrize("kwargs, match", [
    (dict(decay=1.0), r"decay=1.0\) must be a number in \[0, 1\)"),
    (dict(decay=-0.1), "must be a number in"),
    (dict(update_every_n_steps=0), "update_every_n_steps=0"),
    (dict(update_starting_at_step=-1), "update_starting_at_step=-1"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(FulmenConfigError, match=match):
        EMAWeightAveraging(**kwargs)


def test_sharded_parameters_are_refused(tmp_path):
    class Partition(Callback):
        """Stands for a strategy that partitioned a parameter away (nothing left locally)."""

        def on_fit_start(self, module):
            module.layer.bias.data = torch.empty(0)

    with pytest.raises(FulmenConfigError, match="needs whole parameters on each process"):
        _fit(tmp_path, [Partition(), EMAWeightAveraging()], enable_checkpointing=False, val=False)


def test_registered_by_name(tmp_path):
    trainer = quiet_trainer(tmp_path, callbacks=["ema_weight_averaging"], logger=False)
    assert any(isinstance(cb, EMAWeightAveraging) for cb in trainer.callbacks)


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
import fulmen
from fulmen.callbacks import Callback, EMAWeightAveraging
from helpers import BoringModule, loader

class Dump(Callback):
    def __init__(self, ema):
        self.ema = ema
    def on_fit_end(self, trainer):
        averaged = {{k: v.flatten().tolist() for k, v in self.ema.averaged_state_dict().items()}}
        json.dump({{"averaged": averaged, "updates": self.ema.num_updates}},
                  open({out!r} + f"/rank_{{trainer.global_rank}}.json", "w"))

if __name__ == "__main__":
    fulmen.seed_everything(0)
    ema = EMAWeightAveraging(decay=0.9)
    trainer = fulmen.Trainer(accelerator="cpu", strategy="ddp_spawn", devices=2, max_epochs=2, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[ema, Dump(ema)])
    trainer.fit(BoringModule(), loader(64, batch_size=8))
"""


def test_ddp_ranks_keep_identical_averages_equal_to_one_process(tmp_path):
    tests = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "ema_ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=tests, out=str(tmp_path)))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["updates"] == 8
    # one process over the same global batches (rank r gets samples r, r+2, ...: a batch of 16)
    fulmen.seed_everything(0)
    ema = EMAWeightAveraging(decay=0.9)
    trainer = quiet_trainer(tmp_path / "single", max_epochs=2, logger=False, enable_checkpointing=False,
                            callbacks=[ema])
    trainer.fit(BoringModule(), loader(64, batch_size=16))
    for name, value in ema.averaged_state_dict().items():
        assert torch.allclose(torch.tensor(ranks[0]["averaged"][name]), value.flatten(), atol=1e-6), name


FSDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import fulmen
from fulmen.callbacks import EMAWeightAveraging
from fulmen.errors import FulmenConfigError
from helpers import BoringModule, loader

if __name__ == "__main__":
    trainer = fulmen.Trainer(accelerator="cpu", strategy="fsdp", devices=2, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[EMAWeightAveraging()])
    try:
        trainer.fit(BoringModule(), loader(32, batch_size=8))
        message = None
    except FulmenConfigError as exc:
        message = str(exc)
    json.dump({{"message": message}}, open({out!r} + f"/rank_{{trainer.global_rank}}.json", "w"))
"""


def test_fsdp_is_refused_on_every_rank(tmp_path):
    pytest.importorskip("fulmen_fsdp")
    script = tmp_path / "ema_fsdp.py"
    script.write_text(FSDP_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), out=str(tmp_path)))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in range(2):
        message = json.loads((tmp_path / f"rank_{rank}.json").read_text())["message"]
        assert message and "needs whole parameters on each process, but FSDPStrategy shards them" in message
