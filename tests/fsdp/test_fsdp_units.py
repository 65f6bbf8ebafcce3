"""The parts of fulmen-strategy-fsdp that need no process group: precision policies, unit
selection, activation checkpointing, optimizer state formats, the sharded directory format
(metadata, references, atomic publishing, consolidation) and the core hooks FSDP relies on
(``configure_model``, evaluation through the wrapped module, ``ckpt_path="last"`` finding
directories)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import fulmen
from fulmen.errors import FulmenCheckpointError
from fulmen_fsdp import checkpoint as sharded
from fulmen_fsdp.strategy import mixed_precision_policy
from fulmen_fsdp.wrapping import apply_activation_checkpointing, policy_predicate, select_modules
from fsdp_helpers import Block, TinyGPT, TinyGPTNet, token_loader


# ---------------------------------------------------------------------------- policies
@pytest.mark.parametrize(
    "precision,param,reduce",
    [("bf16-mixed", torch.bfloat16, torch.float32), ("16-mixed", torch.float16, torch.float32),
     ("32-true", None, None), ("bf16-true", None, None), ("64-true", None, None)],
)
def test_mixed_precision_policy_follows_the_precision(precision, param, reduce):
    policy = mixed_precision_policy(precision)
    assert policy.param_dtype is param and policy.reduce_dtype is reduce


def test_units_are_chosen_by_class_name_or_callable():
    net = TinyGPTNet()
    by_class = select_modules(net, policy_predicate({Block}, "auto_wrap_policy"))
    by_name = select_modules(net, policy_predicate("Block", "auto_wrap_policy"))
    by_callable = select_modules(net, policy_predicate(lambda m: isinstance(m, nn.LayerNorm), "auto_wrap_policy"))
    assert by_class == by_name == list(net.blocks)
    assert len(by_callable) == 5 and net not in by_class
    assert select_modules(net, policy_predicate(None, "auto_wrap_policy")) == []


def test_activation_checkpointing_keeps_names_outputs_and_gradients():
    torch.manual_seed(0)
    plain = TinyGPTNet()
    checkpointed = TinyGPTNet()
    checkpointed.load_state_dict(plain.state_dict())
    assert apply_activation_checkpointing(checkpointed.blocks) == 2
    assert apply_activation_checkpointing(checkpointed.blocks) == 0  # idempotent
    assert type(checkpointed.blocks[0]).__name__ == "CheckpointedBlock" and isinstance(checkpointed.blocks[0], Block)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    x = torch.randint(0, 32, (4, 8))
    for model in (plain, checkpointed):
        model(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


# ---------------------------------------------------------------------------- optimizer formats
def test_optimizer_state_converts_between_positions_and_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight, model[1].weight]},
                                   {"params": [model[0].bias, model[1].bias], "lr": 0.5}])
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    positional = optimizer.state_dict()
    names = ["0.weight", "1.weight", "0.bias", "1.bias"]
    named = sharded.ids_to_fqn(positional, names)
    assert sharded.is_fqn_keyed(named) and not sharded.is_fqn_keyed(positional)
    assert named["param_groups"][1]["params"] == ["0.bias", "1.bias"] and named["param_groups"][1]["lr"] == 0.5
    assert torch.equal(named["state"]["1.bias"]["exp_avg"], positional["state"][3]["exp_avg"])
    back = sharded.fqn_to_ids(named)
    fresh = torch.optim.AdamW([{"params": [model[0].weight, model[1].weight]},
                               {"params": [model[0].bias, model[1].bias], "lr": 0.5}])
    fresh.load_state_dict(back)
    assert torch.equal(fresh.state_dict()["state"][2]["exp_avg_sq"], positional["state"][2]["exp_avg_sq"])
    with pytest.raises(FulmenCheckpointError, match="covers 4 parameters but this optimizer has 3"):
        sharded.ids_to_fqn(positional, names[:3])


# ---------------------------------------------------------------------------- the directory format
def _fake_sharded_checkpoint(directory: Path, tensors=None, extra=None):
    """A sharded checkpoint written by one process without a process group: DCP files for
    ``tensors`` (as if they were sharded) and the metadata file with markers for them."""
    import torch.distributed.checkpoint as dcp

    tensors = tensors or {}
    directory.mkdir(parents=True)
    state = {"state_dict": {}, "global_step": 3, **(extra or {})}
    for key, value in tensors.items():
        state["state_dict"][key] = {sharded.MARKER: f"state_dict/{key}", "shape": list(value.shape),
                                    "dtype": sharded._dtype_name(value.dtype)}
    if tensors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({f"state_dict/{k}": v for k, v in tensors.items()}, checkpoint_id=str(directory), no_dist=True)
    sharded.write_metadata(state, directory, world_size=1)
    return directory


def test_metadata_markers_become_references_that_read_whole_tensors(tmp_path):
    weight = torch.randn(6, 4)
    path = _fake_sharded_checkpoint(tmp_path / "a.ckpt", {"layer.weight": weight}, {"note": [1, "two"]})
    assert sharded.is_sharded_checkpoint(path)
    checkpoint = sharded.read_metadata(path)
    ref = checkpoint["state_dict"]["layer.weight"]
    assert isinstance(ref, sharded.ShardedTensorRef) and ref.shape == (6, 4) and ref.dtype == torch.float32
    assert torch.equal(ref.full_tensor(), weight)
    assert checkpoint["note"] == [1, "two"] and sharded.HEADER_KEY not in checkpoint
    assert sharded.saved_world_size(path) == 1
    whole = sharded.load_sharded_checkpoint(path)
    assert torch.equal(whole["state_dict"]["layer.weight"], weight)
    out = sharded.consolidate_checkpoint(path, tmp_path / "one.ckpt")
    assert torch.equal(torch.load(out, weights_only=True)["state_dict"]["layer.weight"], weight)


def test_binding_references_to_the_live_state_checks_names_and_shapes(tmp_path):
    path = _fake_sharded_checkpoint(tmp_path / "b.ckpt", {"w": torch.ones(2, 2), "extra": torch.ones(3)})
    saved = sharded.read_metadata(path)["state_dict"]
    live = {"w": torch.zeros(2, 2)}
    with pytest.raises(FulmenCheckpointError, match="no counterpart in the model: extra"):
        sharded.bind_refs(saved, live, strict=True, what="module state")
    resolved, loads = sharded.bind_refs(saved, live, strict=False, what="module state")
    assert list(resolved) == ["w"] and set(loads) == {"state_dict/w"}
    with pytest.raises(FulmenCheckpointError, match=r"w has shape \[2, 2\] in the checkpoint but \[4\]"):
        sharded.bind_refs(saved, {"w": torch.zeros(4), "extra": torch.zeros(3)}, strict=True, what="module state")


def test_incomplete_or_foreign_directories_are_named(tmp_path):
    (tmp_path / "half.ckpt").mkdir()
    (tmp_path / "half.ckpt" / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(FulmenCheckpointError, match="not a complete sharded checkpoint"):
        sharded.read_metadata(tmp_path / "half.ckpt")
    with pytest.raises(FileNotFoundError):
        sharded.read_metadata(tmp_path / "nothing.ckpt")
    path = _fake_sharded_checkpoint(tmp_path / "c.ckpt", {"w": torch.ones(2)})
    (path / ".metadata").unlink()
    with pytest.raises(FulmenCheckpointError, match="missing its DCP .metadata"):
        sharded.read_metadata(path)


def test_publishing_replaces_the_old_checkpoint_only_when_the_new_one_is_complete(tmp_path):
    target = _fake_sharded_checkpoint(tmp_path / "last.ckpt", extra={"version": "old"})
    tmp = _fake_sharded_checkpoint(sharded.temporary_directory(target), extra={"version": "new"})
    assert tmp.name == ".last.ckpt.sharded-tmp" and not tmp.name.endswith(".ckpt")
    assert sharded.read_metadata(target)["version"] == "old"  # untouched while the new one is written
    sharded.publish(tmp, target)
    assert sharded.read_metadata(target)["version"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    # a full file of the same name is replaced as well
    (tmp_path / "full.ckpt").write_bytes(b"old file")
    sharded.publish(_fake_sharded_checkpoint(tmp_path / ".full.ckpt.sharded-tmp"), tmp_path / "full.ckpt")
    assert sharded.is_sharded_checkpoint(tmp_path / "full.ckpt")


# ---------------------------------------------------------------------------- core hooks FSDP relies on
class _Trainerish:
    """What ``fulmen.trainer.checkpoint.candidates`` reads from a Trainer."""

    def __init__(self, root, strategy):
        self.default_root_dir = str(root)
        self.checkpoint_callbacks = []
        self.strategy = strategy


def test_resume_from_last_finds_sharded_directories_and_skips_a_damaged_one(tmp_path):
    import os
    import time

    from fulmen.trainer import checkpoint as ckpt
    from fulmen_fsdp import FSDPStrategy

    good = _fake_sharded_checkpoint(tmp_path / "ckpts" / "epoch=0-step=3.ckpt")
    damaged = tmp_path / "ckpts" / "last.ckpt"
    damaged.mkdir()
    later = time.time() + 5
    os.utime(damaged, (later, later))
    trainer = _Trainerish(tmp_path, FSDPStrategy())
    assert ckpt.candidates(trainer, "last") == [str(damaged), str(good)]
    with pytest.warns(fulmen.errors.FulmenWarning, match="skipping damaged checkpoint"):
        checkpoint, path = ckpt.load_first_good(trainer, "last")
    assert path == str(good) and checkpoint["global_step"] == 3


def test_trainer_calls_configure_model_once_before_setup_and_evaluates_through_the_wrapper(tmp_path):
    calls = []

    class Recorder(TinyGPT):
        def configure_model(self):
            calls.append("configure_model")
            super().configure_model()

    model = Recorder(meta_init=True)
    assert model.net is None
    trainer = fulmen.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                             default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=2)
    trainer.fit(model, token_loader(32, 8), token_loader(16, 8))
    dispatched = []
    trainer._dispatcher.register_forward_pre_hook(lambda module, args: dispatched.append(module.step_name))
    trainer.validate(model, token_loader(16, 8), verbose=False)
    assert calls == ["configure_model"]  # once per model, not again for validate
    assert model.built_on_meta is False  # without a sharding strategy the layers are real
    assert dispatched == ["validation_step", "validation_step"]
