"""``fulmen fit`` from YAML and the command line, the saved config, and a rerun from it."""

from __future__ import annotations

import textwrap

import torch
import yaml

from cli_helpers import checkpoint_state, ok, only, quiet_trainer, run_fulmen

RUN_YAML = """\
trainer:
  max_epochs: 2
  callbacks:
    - lr_monitor
    - class_path: fulmen.callbacks.EarlyStopping
      init_args:
        monitor: val_loss
        patience: 5
model:
  class_path: cli_toy.Regressor
  init_args:
    hidden: 6
data:
  class_path: cli_toy.Points
  init_args:
    batch_size: 4
"""


def test_fit_from_yaml_saves_its_config_with_the_seed_used_and_the_saved_config_reproduces_the_run(tmp_path):
    (tmp_path / "run.yaml").write_text(RUN_YAML)
    ok(run_fulmen("fit", "--config", "run.yaml", *quiet_trainer(tmp_path / "first"), cwd=tmp_path))
    saved = only((tmp_path / "first").rglob("config.yaml"))
    config = yaml.safe_load(saved.read_text())
    assert config["model"] == {"class_path": "cli_toy.Regressor", "init_args": {"hidden": 6, "lr": 0.1, "name": "toy"}}
    # seed_everything defaults to true: the seed picked is recorded, so a rerun can repeat it
    assert isinstance(config["seed_everything"], int) and not isinstance(config["seed_everything"], bool)
    assert config["trainer"]["max_epochs"] == 2
    assert config["trainer"]["callbacks"][0] == "lr_monitor"  # a registered name, kept as written
    first = checkpoint_state(only((tmp_path / "first").rglob("*.ckpt")))
    assert first["net.0.weight"].shape == (6, 3)  # hidden=6 from the YAML reached the model

    config["trainer"]["default_root_dir"] = str(tmp_path / "again")  # only where it writes differs
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(config))
    ok(run_fulmen("fit", "--config", "again.yaml", cwd=tmp_path))
    again = checkpoint_state(only((tmp_path / "again").rglob("*.ckpt")))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_validate_and_test_run_from_the_command_line(tmp_path):
    common = ["--model", "cli_toy.Regressor", "--data", "cli_toy.Points", "--trainer.logger", "csv", *quiet_trainer(tmp_path)]
    out = ok(run_fulmen("test", *common, cwd=tmp_path))
    assert "test_loss" in out.stdout  # the test loop ran and printed its metrics
    # a logger by class_path: the config is saved in that logger's directory
    logger = '{"class_path": "fulmen.loggers.CSVLogger", "init_args": {"save_dir": "logs", "name": "mine"}}'
    out = ok(run_fulmen("validate", *common, "--trainer.logger", logger, "--verbose", "true", cwd=tmp_path))
    assert "val_loss" in out.stdout
    assert yaml.safe_load((tmp_path / "logs" / "mine" / "version_0" / "config.yaml").read_text())["verbose"] is True


def test_a_lightning_style_script_with_cli_and_its_classes(tmp_path):
    """``CLI(Regressor, Points)`` in a script: --model.<arg> without class_path, as LightningCLI."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""\
        import sys
        from cli_toy import Points, Regressor
        from fulmen.cli import CLI

        class MyCLI(CLI):
            def add_arguments_to_parser(self, parser):
                parser.link_arguments("data.batch_size", "model.hidden")

            def after_fit(self):
                print("hidden", self.model.hparams.hidden, "stage", self.subcommand)

        MyCLI(Regressor, Points)
    """))
    import subprocess
    import sys

    from cli_helpers import HERE

    proc = subprocess.run([sys.executable, str(script), "fit", "--data.batch_size", "5", "--trainer.max_epochs", "1",
                           *quiet_trainer(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env={**__import__("os").environ, "PYTHONPATH": str(HERE)})
    ok(proc)
    assert "hidden 5 stage fit" in proc.stdout  # link_arguments carried data.batch_size to model.hidden
