"""FSDP checkpoints: full files for plain torch users, resharding 2 → 1 → 2 and full → FSDP
with optimizer state, consolidation of a sharded directory into one file, exact resume
after SIGKILL. The launches live in conftest.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

import fulmen
from fsdp_helpers import PYTHON, TinyGPT, ranks, token_loader
from fulmen_fsdp import consolidate_checkpoint, is_sharded_checkpoint
from fulmen_fsdp.checkpoint import saved_world_size

FSDP_BIN = Path(PYTHON).parent / "fulmen-fsdp"


def assert_same(a, b, path=""):
    """Bit-for-bit equality of nested checkpoint data."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), (path, sorted(map(str, a)), sorted(map(str, b)))
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, (path, a, b)


def assert_same_training_state(a_path, b_path, keys=("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch")):
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    for key in keys:
        assert_same(a[key], b[key], key)


def test_full_checkpoint_is_a_plain_single_file_checkpoint(trainer_runs, tmp_path):
    root, _ = trainer_runs
    path = root / "equiv_final.ckpt"
    assert path.is_file()
    checkpoint = torch.load(path, weights_only=True)
    trained = ranks(root / "equiv")[0]["params"]
    plain = TinyGPT()
    plain.load_state_dict(checkpoint["state_dict"])
    for name, value in plain.named_parameters():
        assert value.detach().flatten().tolist() == trained[name]
    optimizer = torch.optim.AdamW(plain.parameters(), lr=0.01)
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])  # torch's own positional format
    assert int(optimizer.state_dict()["state"][0]["step"]) == 4
    loaded = TinyGPT.load_from_checkpoint(path)
    assert torch.equal(loaded.net.head.weight, plain.net.head.weight)
    # a single-device Trainer resumes training from it
    trainer = fulmen.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             default_root_dir=tmp_path)
    trainer.fit(TinyGPT(), token_loader(64, 16), ckpt_path=str(path))
    assert trainer.global_step == 8


def test_sharded_checkpoint_of_2_processes_loads_into_1(trainer_runs, reshard_to_1):
    root, _ = trainer_runs
    single, _ = reshard_to_1
    assert saved_world_size(root / "equiv" / "ckpts" / "last.ckpt") == 2
    # The state read back by one process, saved in full, is the 2-process run's final state.
    assert_same_training_state(root / "equiv_final.ckpt", single / "from_2_final.ckpt")
    ws1 = single / "ws1.ckpt"
    assert is_sharded_checkpoint(ws1) and saved_world_size(ws1) == 1
    assert not (ws1 / "__1_0.distcp").exists()


def test_bf16_true_trains_and_checkpoints_in_bfloat16(reshard_to_1):
    single, _ = reshard_to_1
    result = ranks(single / "bf16_true", count=1)[0]
    assert result["param_dtype"] == "torch.bfloat16" and result["global_step"] == 4
    weights = consolidate_checkpoint(single / "bf16_true.ckpt", single / "bf16_true_full.ckpt")
    assert torch.load(weights, weights_only=True)["state_dict"]["net.head.weight"].dtype == torch.bfloat16


def test_sharded_checkpoint_of_1_process_and_a_full_file_load_into_2(trainer_runs, reshard_to_2):
    root, _ = trainer_runs
    target, proc = reshard_to_2
    assert_same_training_state(root / "equiv_final.ckpt", target / "from_1_final.ckpt")
    assert_same_training_state(root / "equiv_final.ckpt", target / "from_full_final.ckpt")
    assert ranks(target / "from_1")[1]["local_shapes"]["net.head.weight"] == [16, 16]
    # one rank's random states for two ranks: said, not hidden
    assert "holds random states for 1 ranks" in proc.log


def test_consolidate_command_and_function_write_the_full_checkpoint(trainer_runs, tmp_path):
    root, _ = trainer_runs
    last = root / "equiv" / "ckpts" / "last.ckpt"  # written at step 4 (in epoch 1), the last step of the run
    out = tmp_path / "consolidated.ckpt"
    proc = subprocess.run([str(FSDP_BIN), "consolidate", str(last), str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_same_training_state(root / "equiv_final.ckpt", out, keys=("state_dict", "optimizer_states", "lr_schedulers"))
    assert TinyGPT.load_from_checkpoint(out).net.head.weight.shape == (32, 16)
    # the same conversion as a function, on the checkpoint of step 2
    step2 = consolidate_checkpoint(root / "equiv" / "ckpts" / "epoch=0-step=2.ckpt", tmp_path / "step2.ckpt")
    assert torch.load(step2, weights_only=True)["global_step"] == 2
    # a single-file tool refuses a directory and says how to convert it
    proc = subprocess.run([PYTHON, "-m", "fulmen_fsdp.consolidate", str(tmp_path / "nope"), str(tmp_path / "x.ckpt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_plain_loading_of_a_sharded_directory_points_to_consolidation(trainer_runs):
    import pytest

    from fulmen.errors import FulmenCheckpointError

    root, _ = trainer_runs
    with pytest.raises(FulmenCheckpointError, match="fulmen-fsdp consolidate"):
        TinyGPT.load_from_checkpoint(root / "equiv" / "ckpts" / "last.ckpt")


def test_killed_run_resumes_from_last_bit_for_bit(trainer_runs, kill_resume):
    root, _ = trainer_runs
    kill_root, killed, after_kill, resumed = kill_resume
    assert killed.returncode == -9, killed.log[-3000:]
    assert "KILLING at step 5" in killed.log
    assert {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"} <= set(after_kill)
    assert "epoch=1-step=6.ckpt" not in after_kill
    results = ranks(kill_root / "run")
    assert all(r["global_step"] == 12 for r in results)
    # dropout masks, shuffled order, AdamW moments, the scheduler: all as if never killed
    assert_same_training_state(root / "ref_final.ckpt", kill_root / "resumed_final.ckpt")
    assert results[0]["params"] == ranks(root / "ref")[0]["params"]
