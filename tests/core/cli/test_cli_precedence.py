"""One precedence: command line > config files (later over earlier) > checkpoint
hyperparameters > defaults; ``--ckpt_path`` resumes."""

from __future__ import annotations

import pytest
import yaml

from cli_helpers import checkpoint_state, ok, only, quiet_trainer, run_fulmen


def printed(*args, cwd):
    return yaml.safe_load(ok(run_fulmen("fit", *args, "--print_config", cwd=cwd)).stdout)


def test_command_line_over_later_files_over_earlier_files_over_defaults(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "model:\n  class_path: cli_toy.Regressor\n  init_args:\n    hidden: 5\n    lr: 0.5\n    name: a\n"
        "trainer:\n  max_epochs: 3\n")
    (tmp_path / "b.yaml").write_text("model:\n  init_args:\n    lr: 0.25\n    name: b\n")
    # The option comes before the files on purpose: where it is typed does not matter.
    config = printed("--model.name", "cli", "--config", "a.yaml", "--config", "b.yaml", cwd=tmp_path)
    assert config["model"]["init_args"] == {"hidden": 5, "lr": 0.25, "name": "cli"}
    assert config["trainer"]["max_epochs"] == 3  # from a.yaml
    assert config["trainer"]["max_steps"] == -1  # the Trainer's default


def test_checkpoint_hyperparameters_sit_between_the_user_and_the_defaults_and_ckpt_path_resumes(tmp_path):
    model = ["--model", "cli_toy.Regressor", "--data", "cli_toy.Points"]
    ok(run_fulmen("fit", *model, "--model.hidden", "7", "--model.lr", "0.05", "--model.name", "saved",
                  "--trainer.max_epochs", "1", *quiet_trainer(tmp_path / "first"), cwd=tmp_path))
    ckpt = only((tmp_path / "first").rglob("*.ckpt"))
    (tmp_path / "user.yaml").write_text("model:\n  init_args:\n    lr: 0.02\n")
    config = printed(*model, "--ckpt_path", str(ckpt), "--config", "user.yaml", "--model.name", "typed", cwd=tmp_path)
    # hidden: from the checkpoint (over the default 4); lr: the file over the checkpoint;
    # name: the command line over the checkpoint.
    assert config["model"]["init_args"] == {"hidden": 7, "lr": 0.02, "name": "typed"}

    ok(run_fulmen("fit", *model, "--ckpt_path", str(ckpt), "--trainer.max_epochs", "2",
                  *quiet_trainer(tmp_path / "resumed"), cwd=tmp_path))
    resumed = only((tmp_path / "resumed").rglob("*.ckpt"))
    assert resumed.name.startswith("epoch=1-")  # the second epoch only: it resumed after epoch 0
    saved = yaml.safe_load(only((tmp_path / "resumed").rglob("config.yaml")).read_text())
    assert saved["model"]["init_args"]["hidden"] == 7 and saved["ckpt_path"] == str(ckpt)
    assert checkpoint_state(resumed)["net.0.weight"].shape == (7, 3)


def test_print_config_round_trips(tmp_path):
    first = printed("--model", "cli_toy.Regressor", "--model.hidden", "9", "--data", "cli_toy.Points",
                    "--trainer.callbacks", "lr_monitor", "--trainer.max_epochs", "4", cwd=tmp_path)
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(first))
    assert printed("--config", "printed.yaml", cwd=tmp_path) == first
    assert first["model"]["init_args"]["hidden"] == 9 and first["trainer"]["max_epochs"] == 4


def test_hyperparameters_of_a_sharded_checkpoint_directory_take_their_place_in_the_precedence(tmp_path):
    # A real FSDP run (1 process on the CPU) writes each checkpoint as a directory.
    pytest.importorskip("fulmen_fsdp")
    model = ["--model", "cli_toy.Regressor", "--data", "cli_toy.Points"]
    ok(run_fulmen("fit", *model, "--model.hidden", "7", "--model.name", "sharded", "--data.batch_size", "16",
                  "--trainer.strategy", "fsdp", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                  "--trainer.max_epochs", "1", *quiet_trainer(tmp_path / "first"), cwd=tmp_path))
    ckpt = only((tmp_path / "first").rglob("*.ckpt"))
    assert ckpt.is_dir()
    config = printed(*model, "--ckpt_path", str(ckpt), "--model.name", "typed", cwd=tmp_path)
    assert config["model"]["init_args"] == {"hidden": 7, "lr": 0.1, "name": "typed"}
    assert config["data"]["init_args"]["batch_size"] == 16


def test_an_unreadable_checkpoint_is_one_cli_error_naming_ckpt_path(tmp_path):
    model = ["--model", "cli_toy.Regressor", "--data", "cli_toy.Points"]
    ok(run_fulmen("fit", *model, "--trainer.max_epochs", "1", *quiet_trainer(tmp_path / "first"), cwd=tmp_path))
    ckpt = only((tmp_path / "first").rglob("*.ckpt"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the checksum no longer matches
    ckpt.write_bytes(bytes(data))
    missing = tmp_path / "nowhere.ckpt"
    for path, why in ((ckpt, "is corrupted"), (missing, "does not exist")):
        proc = run_fulmen("fit", *model, "--ckpt_path", str(path), *quiet_trainer(tmp_path / "second"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"--ckpt_path {path}: cannot read the checkpoint's hyperparameters" in proc.stderr
        assert why in proc.stderr and "Nothing was run." in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
