"""Pretrained weights loaded into DeepSpeed ZeRO-3 partitions on 2 real processes: each
rank reads about half of the file and the model gives the logits of a plain load. Needs
DeepSpeed (installed by ``nox -s deepspeed``; skipped elsewhere, saying why)."""

from __future__ import annotations

import pytest

from ft_helpers import HERE, PYTHON, read_json, run

pytest.importorskip("deepspeed", reason="needs deepspeed (pip install deepspeed, or nox -s deepspeed)")
pytest.importorskip("fulmen_deepspeed", reason="needs fulmen-strategy-deepspeed")


def test_zero3_partitions_filled_from_safetensors(tmp_path):
    import sys

    sys.path.insert(0, str(HERE))
    from ft_deepspeed_script import save_weights

    weights = tmp_path / "net.safetensors"
    save_weights(weights)
    proc = run([PYTHON, HERE / "ft_deepspeed_script.py", weights, tmp_path], tmp_path, "deepspeed", timeout=400)
    assert proc.returncode == 0, proc.log[-6000:]
    ranks = [read_json(tmp_path / f"rank_{r}.json") for r in range(2)]
    assert ranks[0]["logits_max_diff"] < 1e-6
    full_bytes = 4 * ranks[0]["total_numel"]
    for rank in ranks:
        assert rank["tensors"] == 7  # embedding, norm (2), two linears (2 each)
        assert rank["partition_numel"] < 0.55 * rank["total_numel"]
        assert rank["bytes_read"] < 0.75 * full_bytes  # its partitions plus at most a row per tensor
