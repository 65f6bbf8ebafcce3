"""``fulmen migrate`` as users run it: the console script's module in a subprocess, on real
files, and a Lightning-style training program that runs under fulmen after the rewrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


LIGHTNING_PROGRAM = '''\
"""A Lightning 2.x program: Module, Trainer, ModelCheckpoint and seed_everything."""
import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint  # keep the best model


class Regressor(L.LightningModule):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(root):
    L.seed_everything(7)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, monitor="val_loss", save_top_k=1)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[checkpoint], default_root_dir=root)
    model = Regressor()
    trainer.fit(model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    assert isinstance(checkpoint, ModelCheckpoint)
    print(json.dumps({"epochs": trainer.current_epoch, "best": checkpoint.best_model_path,
                      "loss": float(trainer.callback_metrics["val_loss"])}))


if __name__ == "__main__":
    main(sys.argv[1])
'''


def fulmen_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", FULMEN_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "fulmen", "migrate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_lightning_program_runs_under_fulmen_after_migrate(tmp_path):
    program = tmp_path / "train.py"
    program.write_text(LIGHTNING_PROGRAM)
    done = fulmen_cli("train.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    migrated = program.read_text()
    assert "lightning" not in migrated.replace("Lightning 2.x", "")
    assert "import fulmen as L, fulmen.callbacks\n" in migrated
    assert "from fulmen.callbacks import ModelCheckpoint  # keep the best model\n" in migrated
    assert "class Regressor(L.Module):" in migrated
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(program), str(tmp_path / "ckpt")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 3
    assert Path(result["best"]).is_file() and Path(result["best"]).parent == tmp_path / "ckpt"
    assert result["loss"] < 30.0  # it trained on real data (the sum of 4 normals has variance 4)


def test_diff_prints_a_unified_diff_and_writes_nothing(tmp_path):
    program = tmp_path / "train.py"
    program.write_text(LIGHTNING_PROGRAM)
    before = program.stat().st_mtime_ns
    done = fulmen_cli("--diff", str(program), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert program.read_text() == LIGHTNING_PROGRAM and program.stat().st_mtime_ns == before
    assert done.stdout.startswith(f"--- {program}\n+++ {program} (migrated)\n")
    assert "\n-import lightning as L\n" in done.stdout
    assert "\n+import fulmen as L, fulmen.callbacks\n" in done.stdout
    changed = [line for line in done.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) == 8  # two import lines and two chains, nothing else
    assert "1 file(s) would change" in done.stderr


def test_check_exits_1_until_migrated_then_0_and_a_second_run_changes_nothing(tmp_path):
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "model.py").write_text("from lightning import LightningModule\nclass M(LightningModule): ...\n")
    (package / "plain.py").write_text("import torch\n")
    hidden = tmp_path / "src" / ".venv"
    hidden.mkdir()
    (hidden / "lib.py").write_text("import lightning\n")
    assert fulmen_cli("--check", "src", cwd=tmp_path).returncode == 1
    assert fulmen_cli("src", cwd=tmp_path).returncode == 0
    assert (package / "model.py").read_text() == "from fulmen import Module\nclass M(Module): ...\n"
    assert (hidden / "lib.py").read_text() == "import lightning\n"  # hidden folders are skipped
    again = fulmen_cli("--check", "src", cwd=tmp_path)
    assert again.returncode == 0 and "0 file(s) would change" in again.stderr


def test_the_report_names_each_unmapped_line_and_strict_fails_on_it(tmp_path):
    source = textwrap.dedent("""\
        import lightning as L
        from lightning.pytorch.callbacks import RichProgressBar

        trainer = L.Trainer(callbacks=[RichProgressBar()])
        tuner = L.pytorch.tuner.Tuner(trainer)
        """)
    (tmp_path / "prog.py").write_text(source)
    done = fulmen_cli("--strict", "prog.py", cwd=tmp_path)
    assert done.returncode == 1
    report = [line for line in done.stderr.splitlines() if line.startswith("prog.py:")]
    assert [line.split(" — ")[0] for line in report] == [
        "prog.py:2:41: lightning.pytorch.callbacks.RichProgressBar",
        "prog.py:4:32: lightning.pytorch.callbacks.RichProgressBar",
        "prog.py:5:9: lightning.pytorch.tuner.Tuner",
    ]
    assert "fulmen.callbacks.ProgressBar" in report[0] and "tuner" in report[2]
    lines = (tmp_path / "prog.py").read_text().splitlines()
    assert lines[1] == "from lightning.pytorch.callbacks import RichProgressBar"
    assert lines[4] == "tuner = lightning.pytorch.tuner.Tuner(trainer)"  # the report's line, as written


def test_a_file_that_does_not_parse_is_named_and_the_others_still_migrate(tmp_path):
    (tmp_path / "bad.py").write_text("import lightning as L\ndef broken(:\n")
    (tmp_path / "good.py").write_text("import lightning as L\nL.Trainer\n")
    done = fulmen_cli(".", cwd=tmp_path)
    assert done.returncode == 1
    assert "bad.py: cannot migrate: ParserSyntaxError" in done.stderr
    assert (tmp_path / "good.py").read_text() == "import fulmen as L\nL.Trainer\n"
    assert (tmp_path / "bad.py").read_text() == "import lightning as L\ndef broken(:\n"


def test_a_missing_path_is_a_usage_error(tmp_path):
    done = fulmen_cli("nowhere.py", cwd=tmp_path)
    assert done.returncode == 2 and "no such file or folder: nowhere.py" in done.stderr


def test_without_libcst_the_command_says_how_to_install_it(tmp_path):
    (tmp_path / "p.py").write_text("import lightning\n")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "libcst.py").write_text("raise ImportError('libcst is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker), FULMEN_DISABLE_PLUGIN_AUTOLOAD="1")
    done = subprocess.run([sys.executable, "-m", "fulmen", "migrate", "p.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert 'pip install "fulmen[migrate]"' in done.stderr
    assert (tmp_path / "p.py").read_text() == "import lightning\n"
