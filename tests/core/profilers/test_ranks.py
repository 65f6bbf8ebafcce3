"""Two real gloo ranks on CPU: each writes its own report, named by its local rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from profiler_helpers import read, simple_rows

TESTS = Path(__file__).resolve().parents[2]


def test_each_rank_writes_its_own_report(tmp_path):
    script = tmp_path / "profiled_ddp.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import fulmen
from fulmen.profilers import SimpleProfiler
from helpers import BoringModule, loader

if __name__ == "__main__":
    trainer = fulmen.Trainer(accelerator="cpu", strategy="ddp_fork", devices=2, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir={str(tmp_path)!r}, profiler=SimpleProfiler(filename="perf"))
    trainer.fit(BoringModule(), loader(64, batch_size=8))
""")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        rows = simple_rows(read(tmp_path / f"fit-perf-{rank}.txt"))
        assert rows["[Strategy]DDPStrategy.training_step"]["Num calls"] == "4"  # 64 samples / 2 ranks / 8
        assert rows["[Strategy]DDPStrategy.backward"]["Num calls"] == "4"
    assert not (tmp_path / "fit-perf.txt").exists()
