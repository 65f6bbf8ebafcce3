"""The GPU benchmark script runs end to end on the CPU (``--dry-run``), so the one command a
lent GPU machine gets is known to work before that machine's minutes are spent on it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_DS = importlib.util.find_spec("deepspeed")
# ``origin`` is None for a namespace package: with tests/ on sys.path, tests/deepspeed would pass.
HAVE_DEEPSPEED = _DS is not None and _DS.origin is not None


def test_gpu_script_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(
        # The DeepSpeed part (a process per run) has its own, slower test below.
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out), "--skip", "deepspeed"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_results.json").read_text())
    assert results["dry_run"] is True and results["device"] == "cpu"

    sync = results["sync_check"]
    for variant in ("raw", "fulmen_fabric", "fulmen_trainer"):
        assert sync[variant]["passed"] is True, sync[variant]
    # fulmen reads logged tensors as floats only at logging boundaries (counted without CUDA).
    assert sync["fulmen_trainer"]["float_reads_only_at_log_steps"] is True
    reads = sync["fulmen_trainer"]["float_reads_at_steps"]
    last = max(reads)  # the run's last step: the epoch-end values are read there too
    assert reads and all(step % sync["log_every_n_steps"] == 0 or step == last for step in reads)
    assert len(reads) <= sync["steps"] // sync["log_every_n_steps"] + 2  # not once per step
    assert sync["raw"]["final_loss"] == sync["fulmen_trainer"]["final_loss"] == sync["fulmen_fabric"]["final_loss"]

    for part in ("mlp", "gpt_eager", "gpt_compile"):
        variants = results[part]["variants"]
        assert {"raw", "fulmen_trainer", "fulmen_fabric"} <= set(variants), part
        losses = {name: round(v["final_losses"][0], 5) for name, v in variants.items()}
        assert len(set(losses.values())) == 1, (part, losses)  # every variant did the same work
        assert all(v["median_us"] > 0 for v in variants.values())
    assert "GPU benchmarks" in (out / "gpu_results.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DEEPSPEED, reason="deepspeed is not installed: DS_BUILD_OPS=0 pip install deepspeed")
@pytest.mark.timeout(600)
def test_gpu_script_deepspeed_part_dry_run(tmp_path):
    """The DeepSpeed part alone (ZeRO-2 and -3, bf16, 1 process; 6 launches, ~1-2 min here):
    raw DeepSpeed, Trainer and Fabric all run and end at the same loss in each stage."""
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "fulmen-deepspeed-extensions"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out),
         "--skip", "sync", "mlp", "gpt_eager", "gpt_compile"],
        capture_output=True, text=True, timeout=580, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_results.json").read_text())
    part = results["deepspeed"]
    assert set(part["stages"]) == {"2", "3"}, part
    for stage, entry in part["stages"].items():
        variants = entry["variants"]
        assert set(variants) == {"raw", "fulmen_trainer", "fulmen_fabric"}
        for name, v in variants.items():
            assert not v["errors"], (stage, name, v["errors"])
            assert v["median_us"] > 0
            assert v["config"]["bf16"] == {"enabled": True}, (stage, name, v["config"])
            assert v["config"]["zero_optimization"]["stage"] == int(stage)
        assert entry["losses_agree"], {n: v["final_losses"] for n, v in variants.items()}
    assert "DeepSpeed ZeRO-2 and ZeRO-3, bf16" in (out / "gpu_results.md").read_text()
