"""FSDP training for real (2 processes, gloo on CPU): the same parameters as one process,
really sharded, meta-device initialisation, mixed precision, CPU offload, accumulation
without gradient sync, clipping by the global norm, HSDP, per-block compile; Trainer and
Fabric users alike. The launches live in conftest.py."""

from __future__ import annotations

import pytest
import torch

import fulmen
from fsdp_helpers import TinyGPT, ranks, token_loader

META_FILES = {".metadata", "__0_0.distcp", "__1_0.distcp", "fulmen_checkpoint.pt"}


def single_process_reference():
    """One process over the same global batches: rank r of 2 gets samples r, r+2, ... in
    batches of 8, so each step's two local batches are the single process's batch of 16."""
    fulmen.seed_everything(0)
    model = TinyGPT()
    initial = {k: v.detach().clone().flatten() for k, v in model.named_parameters()}
    trainer = fulmen.Trainer(accelerator="cpu", max_epochs=2, accumulate_grad_batches=2, gradient_clip_val=0.5,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, token_loader(64, 16), token_loader(16, 16))
    return {k: v.detach().flatten() for k, v in model.named_parameters()}, initial, trainer.global_step


def test_fsdp_trainer_matches_single_process_and_really_shards(trainer_runs):
    root, _ = trainer_runs
    results = ranks(root / "equiv")
    reference, initial, steps = single_process_reference()
    assert [r["world_size"] for r in results] == [2, 2] and [r["mesh"] for r in results] == [[2], [2]]
    assert all(r["strategy"] == "FSDPStrategy" for r in results)
    assert results[0]["params"] == results[1]["params"], "the gathered parameters must agree on every rank"
    assert all(r["global_step"] == steps == 4 for r in results)
    for name, value in reference.items():
        trained = torch.tensor(results[0]["params"][name])
        assert torch.allclose(trained, value, atol=1e-3), (name, float((trained - value).abs().max()))
    moved = max(float((reference[k] - initial[k]).abs().max()) for k in reference)
    assert moved > 0.02, "training must move the parameters well beyond the tolerance"
    # Really sharded: dimension 0 of every parameter is split between the two ranks.
    for name in reference:
        shapes = [r["local_shapes"][name] for r in results]
        full_rows = TinyGPT().state_dict()[name].shape[0]
        assert sum(s[0] for s in shapes) == full_rows, (name, shapes)
        if full_rows >= 2:
            assert all(0 < s[0] < full_rows for s in shapes), (name, shapes)
    assert results[0]["local_shapes"]["net.head.weight"] == [16, 16]
    # configure_model ran on the meta device: no rank ever held the whole model.
    assert all(r["built_on_meta"] is True for r in results)


def test_trainer_writes_one_directory_per_sharded_checkpoint(trainer_runs):
    root, _ = trainer_runs
    ckpts = root / "equiv" / "ckpts"
    names = {p.name for p in ckpts.iterdir()}
    assert {"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"} <= names
    assert not [n for n in names if n.startswith(".")], f"temporary directories left behind: {names}"
    for name in ("epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"):
        directory = ckpts / name
        assert directory.is_dir() and {p.name for p in directory.iterdir()} == META_FILES
        # each rank wrote its own shards
        assert (directory / "__0_0.distcp").stat().st_size > 1000 and (directory / "__1_0.distcp").stat().st_size > 1000


def test_fabric_cpu_offload_accumulation_and_clipping_match_a_full_replica(fabric_run):
    results, _ = fabric_run
    for rank in results:
        phase = rank["offload"]
        assert phase["strategy"] == "FSDPStrategy" and phase["offload"] == "CPUOffloadPolicy"
        assert phase["pin_memory"] is False and phase["param_device"] == "cpu"
        # no_backward_sync: after a non-stepping micro-batch nothing was reduce-scattered
        assert phase["skipped_sync"] == [True] * 4
        # clip_gradients returns the norm of the whole gradient, not of this rank's shard
        assert phase["norms"] == pytest.approx(phase["ref_norms"], rel=1e-5)
        assert phase["max_diff"] < 1e-3


def test_fabric_bf16_mixed_policy_and_sharded_save_load_continue_bit_for_bit(fabric_run):
    results, root = fabric_run
    for rank in results:
        phase = rank["bf16"]
        assert phase["compute_dtype"] == "torch.bfloat16"  # gathered for compute in bf16
        assert phase["param_dtype"] == "torch.float32" and phase["grad_dtype"] == "torch.float32"  # fp32 shards
        assert phase["losses"][-1] < phase["losses"][0] - 0.3
        assert phase["checkpoint_is_dir"] and phase["restored_step"] == 6
        assert phase["resumed"] == phase["continued"] and phase["resume_identical"]
    assert results[0]["bf16"]["losses"] != results[1]["bf16"]["losses"]  # each rank saw its own half


def test_fabric_hsdp_and_full_state_dict_readable_by_plain_torch(fabric_run):
    results, root = fabric_run
    for rank in results:
        phase = rank["hsdp_full"]
        assert phase["mesh"] == [2, 1] and phase["placements"] == ["R", "S(0)"]
        assert phase["max_diff"] < 1e-5
        assert phase["file"] and phase["reloaded"] and phase["remainder"] == ["note"]
    assert results[0]["hsdp_full"]["plain_ok"] is True
    assert (root / "fabric_full.ckpt").is_file()


def test_fabric_meta_device_init_materialises_shards_with_the_eager_values(fabric_run):
    results, _ = fabric_run
    for rank in results:
        phase = rank["meta"]
        assert phase["on_meta"] and phase["same_init"] and phase["trained"]
        assert phase["local_shapes"]["embed.weight"] == [16, 16]


def test_fabric_async_sharded_save_and_per_block_compile(fabric_run):
    results, root = fabric_run
    assert results[0]["async"]["published"] and all(r["async"]["restored"] for r in results)
    assert (root / "fabric_async.ckpt" / "fulmen_checkpoint.pt").is_file()
    for rank in results:
        phase = rank["compile"]
        assert phase["compiled"] and phase["block_class"] == "FSDPCheckpointedBlock"
        assert phase["max_diff"] < 1e-4


def test_fabric_errors_name_what_to_change(fabric_run):
    results, _ = fabric_run
    errors = results[0]["errors"]
    assert "embed.weight has shape [32, 16] in the checkpoint but [32, 32] in the model" in errors["shape"]
    assert "does not exist" in errors["missing"]
    assert "auto_wrap_policy=" in errors["compile"]
