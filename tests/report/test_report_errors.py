"""``fulmen report``'s refusals: not a run directory, no metrics.csv, matplotlib missing; and
``import fulmen`` does not import matplotlib."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fulmen.cli import main as fulmen_cli
from fulmen.errors import FulmenConfigError

HERE = Path(__file__).resolve().parent


def test_not_a_directory(tmp_path, capsys):
    assert fulmen_cli(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing is not a directory" in err and "log_dir" in err


def test_no_metrics_csv_points_at_the_run_directories_below(tmp_path, capsys):
    (tmp_path / "fulmen_logs" / "version_0").mkdir(parents=True)
    (tmp_path / "fulmen_logs" / "version_0" / "metrics.csv").write_text("step,loss\n0,1.0\n")
    assert fulmen_cli(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no metrics.csv" in err and str(tmp_path / "fulmen_logs" / "version_0") in err

    from fulmen.report.run import read_run

    with pytest.raises(FulmenConfigError, match="has no metrics.csv"):
        read_run(tmp_path)


def child_env(tmp_path: Path, blocked=()) -> dict:
    env = dict(os.environ)
    paths = [str(HERE), str(HERE.parent)]
    if blocked:
        site = tmp_path / "block_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked))
        paths.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def test_without_matplotlib_it_says_how_to_install_it_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,train_loss\n0,1.0\n1,0.5\n")
    proc = subprocess.run([sys.executable, "-m", "fulmen", "report", str(run_dir)], capture_output=True, text=True,
                          timeout=120, env=child_env(tmp_path, blocked=("matplotlib",)))
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "fulmen[report]"' in proc.stderr
    assert not (run_dir / "report").exists()


def test_import_fulmen_does_not_import_matplotlib(tmp_path):
    code = "import sys, fulmen, fulmen.report, fulmen.builtins; print('matplotlib' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_metrics_go_to_the_figure_a_reader_looks_for():
    from fulmen.report.plots import group_of

    assert [group_of(n) for n in ("train_loss", "loss", "train/acc", "step_loss")] == ["train"] * 4
    assert [group_of(n) for n in ("val_loss", "val/acc", "valid_f1", "train/val_loss")] == ["val"] * 4
    assert [group_of(n) for n in ("lr-SGD", "lr-AdamW/pg1", "learning_rate", "optim/lr")] == ["lr"] * 4
    assert [group_of(n) for n in ("test_loss", "test/acc", "throughput")] == ["other"] * 3
