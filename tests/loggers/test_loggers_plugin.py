"""fulmen-loggers as a plugin: its names in the registry and in ``fulmen plugins``, the
unavailable line when a backend library is missing, the ``fulmen loggers`` command, and an
import-light entry point. Needs no backend library (the parts that do skip without it)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from delivery_doubles import FileBackend, FileBackendLogger

import fulmen
from fulmen.errors import FulmenPluginError

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BACKENDS = {
    "mlflow": ("MLflow", "mlflow"),
    "wandb": ("Weights & Biases", "wandb"),
    "tensorboard": ("TensorBoard", "tensorboard"),
    "clearml": ("ClearML", "clearml"),
    "comet": ("Comet", "comet_ml"),
}


def pip_line(name: str) -> str:
    label, module = BACKENDS[name]
    return f"the {label} library ('{module}') is not installed: pip install 'fulmen-loggers[{name}]'"


def env_without(tmp_path: Path, blocked=("mlflow", "wandb", "tensorboard", "clearml", "comet_ml"), **extra) -> dict:
    """A child environment in which ``import mlflow`` (etc.) fails as if it were not installed:
    a sitecustomize marks the modules missing in sys.modules, which is how Python itself
    blocks an import (``find_spec`` returns None, ``import`` raises ModuleNotFoundError).
    With nothing blocked, the child sees what this process sees."""
    paths = [str(HERE), str(HERE.parent)]
    if blocked:
        site = tmp_path / "block_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
        )
        paths.insert(0, str(site))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULMEN_PLUGINS", "FULMEN_DISABLE"))}
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


def run(cmd, env, timeout=120):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_names_are_registered_by_fulmen_loggers():
    registry = fulmen.Fabric(accelerator="cpu").registry
    for name in BACKENDS:
        entry = registry.get("logger", name)
        assert entry.distribution == "fulmen-loggers"
        assert entry.description
        installed = importlib.util.find_spec(BACKENDS[name][1]) is not None
        assert (entry.factory.unavailable_reason() is None) == installed


def test_fulmen_plugins_lists_the_loggers_and_their_availability(tmp_path):
    env = env_without(tmp_path, blocked=())
    proc = run([str(BIN / "fulmen"), "plugins", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    row = {r["name"]: r for r in json.loads(proc.stdout)["plugins"]}["loggers"]
    assert row["status"] == "loaded" and row["registers"]["logger"] == sorted(BACKENDS)
    missing = {n for n, (_, module) in BACKENDS.items() if importlib.util.find_spec(module) is None}
    assert set(row["unavailable"].get("logger", {})) == missing


def test_without_the_backend_libraries_plugins_says_unavailable_with_the_pip_line(tmp_path):
    env = env_without(tmp_path)
    text = run([str(BIN / "fulmen"), "plugins"], env)
    assert text.returncode == 0, text.stderr
    assert "loggers  (fulmen-loggers" in text.stdout and f"logger: {', '.join(sorted(BACKENDS))}" in text.stdout
    for name in BACKENDS:
        assert f"    logger {name}: unavailable - {pip_line(name)}" in text.stdout.splitlines()
    as_json = run([sys.executable, "-m", "fulmen", "plugins", "--json"], env)
    row = {r["name"]: r for r in json.loads(as_json.stdout)["plugins"]}["loggers"]
    assert row["status"] == "loaded"
    assert row["unavailable"] == {"logger": {name: pip_line(name) for name in BACKENDS}}


def test_without_the_backend_library_asking_by_name_raises_the_same_line(tmp_path):
    script = textwrap.dedent(
        """
        import sys, fulmen
        from fulmen.errors import FulmenPluginError
        for name in ("mlflow", "wandb", "tensorboard", "clearml", "comet"):
            try:
                fulmen.Trainer(accelerator="cpu", logger=name, default_root_dir=sys.argv[1])
            except FulmenPluginError as exc:
                print(f"{name}|{exc}")
        trainer = fulmen.Trainer(accelerator="cpu", logger="csv", default_root_dir=sys.argv[1])
        print("csv|ok")
        """
    )
    proc = run([sys.executable, "-c", script, str(tmp_path)], env_without(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split("|", 1) for line in proc.stdout.splitlines())
    for name in BACKENDS:
        assert lines[name] == f"logger {name!r} is unavailable: {pip_line(name)}"
    assert lines["csv"] == "ok"


def test_the_entry_point_and_the_loggers_import_no_backend(tmp_path):
    for module in ("mlflow", "wandb", "tensorboard", "clearml", "comet_ml"):
        pytest.importorskip(module)
    script = textwrap.dedent(
        """
        import sys, fulmen
        trainer = fulmen.Trainer(accelerator="cpu", logger=["mlflow", "wandb", "tensorboard", "clearml", "comet"],
                                 default_root_dir=sys.argv[1])
        print(sorted(type(lg).__name__ for lg in trainer.loggers))
        backends = ("mlflow", "wandb", "tensorboard", "torch.utils.tensorboard", "clearml", "comet_ml")
        print(sorted(m for m in backends if m in sys.modules))
        """
    )
    env = env_without(tmp_path, blocked=(), WANDB_MODE="offline", MLFLOW_DISABLE_TELEMETRY="true")
    proc = run([sys.executable, "-c", script, str(tmp_path)], env)
    assert proc.returncode == 0, proc.stderr
    names = "['ClearMLLogger', 'CometLogger', 'MLflowLogger', 'TensorBoardLogger', 'WandbLogger']"
    assert proc.stdout.splitlines() == [names, "[]"]


def test_fulmen_loggers_replay_command(tmp_path, capsys):
    from fulmen.cli import main as fulmen_cli

    backend = FileBackend(tmp_path / "backend")
    backend.down()
    logger = FileBackendLogger(backend.root, save_dir=tmp_path / "runs", close_timeout=0.2, retry_initial=0.05)
    for step in range(1, 6):
        logger.log_metrics({"loss": float(step)}, step=step)
    with pytest.warns(Warning, match=r"record\(s\) could not be delivered|not answering"):
        logger.finalize("success")
    assert logger.remaining == 6  # five metrics and the run's end

    assert fulmen_cli(["loggers", "replay", str(tmp_path / "runs"), "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "delivered 0 record(s); 6 still spooled in" in out and "Connection refused" in out

    backend.down(False)  # the console script, as a user runs it after the job ended
    done = run(
        [str(BIN / "fulmen"), "loggers", "replay", str(tmp_path / "runs"), "--json"], env_without(tmp_path, blocked=())
    )
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert (result["status"], result["delivered"], result["remaining"]) == ("delivered", 6, 0)
    assert result["run_dir"] == logger.log_dir
    assert backend.metric_steps("loss") == [1, 2, 3, 4, 5]

    assert fulmen_cli(["loggers", "replay", logger.log_dir]) == 0
    assert "delivered 0 record(s), none left" in capsys.readouterr().out
    assert fulmen_cli(["loggers", "replay", str(tmp_path / "backend")]) == 0
    assert "no fulmen logger runs under" in capsys.readouterr().out
    assert fulmen_cli(["loggers"]) == 2
    assert "replay" in capsys.readouterr().out


def test_unavailable_factory_error_is_a_plugin_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(FulmenPluginError, match=r"pip install 'fulmen-loggers\[mlflow\]'"):
        fulmen.Trainer(accelerator="cpu", logger="mlflow", default_root_dir=tmp_path)
