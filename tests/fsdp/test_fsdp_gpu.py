"""On a CUDA machine: strategy "fsdp" with bf16-mixed on one GPU trains, writes a sharded
checkpoint and resumes from it. Skipped without a GPU (never run on the CPU machines)."""

from __future__ import annotations

import json

import pytest
import torch

from fsdp_helpers import HERE, PYTHON, read_json, run

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsdp_bf16_mixed_on_one_gpu_saves_and_resumes_sharded(tmp_path):
    cuda = {"accelerator": "cuda", "precision": "bf16-mixed", "batch_size": 16}
    runs = [
        {**cuda, "name": "first", "epochs": 1, "final_sharded": str(tmp_path / "first.ckpt")},
        {**cuda, "name": "resumed", "epochs": 2, "ckpt_path": str(tmp_path / "first.ckpt")},
        {**cuda, "name": "straight", "epochs": 2},
    ]
    proc = run([PYTHON, HERE / "fsdp_trainer_script.py", "--out", tmp_path, "--devices", 1, "--runs", json.dumps(runs)],
               tmp_path, "gpu")
    assert proc.returncode == 0, proc.log[-6000:]
    resumed, straight = read_json(tmp_path / "resumed" / "rank_0.json"), read_json(tmp_path / "straight" / "rank_0.json")
    assert resumed["global_step"] == straight["global_step"] == 8
    for name, value in straight["params"].items():
        assert torch.allclose(torch.tensor(resumed["params"][name]), torch.tensor(value), atol=1e-3), name
