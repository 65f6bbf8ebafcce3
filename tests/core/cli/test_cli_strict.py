"""Every mistake stops ``fulmen fit`` before training, exit status 2, one paragraph, no traceback."""

from __future__ import annotations

import pytest

import json

from cli_helpers import run_fulmen, run_python

MODEL = ["--model", "cli_toy.Regressor", "--data", "cli_toy.Points"]
CASES = {
    "unknown trainer key": (
        [*MODEL, "--trainer.max_epoch", "2"],
        ["unknown key 'trainer.max_epoch'", "on the command line", "'trainer.max_epochs' (Optional[int])"],
    ),
    "unknown model key": (
        [*MODEL, "--model.hiden", "3"],
        ["unknown key 'model.init_args.hiden'", "'model.init_args.hidden' (int)"],
    ),
    "wrong type": (
        [*MODEL, "--trainer.max_epochs", "many"],
        ["'trainer.max_epochs' expects Optional[int], got 'many'", "on the command line"],
    ),
    "untyped parameter": (
        ["--model", "cli_toy.Untyped"],
        ["'model.init_args.width' has no type annotation", "Untyped.__init__"],
    ),
    "unknown registry name": (
        [*MODEL, "--trainer.strategy", "dpp"],
        ["'trainer.strategy'", "unknown strategy 'dpp'", "Closest registered strategy: 'ddp'"],
    ),
    "unknown key of a callback class": (
        [*MODEL, "--trainer.callbacks", '[{"class_path": "fulmen.callbacks.EarlyStopping", "init_args": {"monitr": "val_loss"}}]'],
        ["unknown key 'trainer.callbacks[0].init_args.monitr'", "'trainer.callbacks[0].init_args.monitor' (str)"],
    ),
    "model class that cannot be imported": (
        ["--model", "cli_toy.Regresor", "--data", "cli_toy.Points"],
        ["'model' (on the command line): cannot import class 'cli_toy.Regresor'", "full dotted path"],
    ),
    "callback class that cannot be imported": (
        [*MODEL, "--trainer.callbacks", '[{"class_path": "fulmen.callbacks.EarlyStoping"}]'],
        ["'trainer.callbacks[0]' (on the command line): cannot import class 'fulmen.callbacks.EarlyStoping'",
         "full dotted path"],
    ),
    "no model": (
        ["--trainer.max_epochs", "1"],
        ["missing: 'model'", "--model package.module.Class"],
    ),
    "key at the wrong level": (
        [*MODEL, "--max_epochs", "2"],
        ["unknown key 'max_epochs'", "'trainer.max_epochs'"],
    ),
}


# One interpreter runs the real ``fulmen`` entry point once per case (a fresh process per
# case would spend most of the suite's time importing torch); the exit status and the exact
# stderr of each call come back as JSON. test_mistakes_in_a_config_file_name_the_file runs
# ``python -m fulmen`` itself, so the process-level behaviour is covered too.
DRIVER = """
import contextlib, io, json, sys
from fulmen.cli import main
out = {}
for name, args in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except BaseException as exc:  # anything escaping main is a bug this test reports
            code = f"raised {type(exc).__name__}: {exc}"
    out[name] = {"code": code, "stderr": err.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("strict")
    argv = {case: ["fit", *args, "--trainer.default_root_dir", str(root / "runs")] for case, (args, _) in CASES.items()}
    proc = run_python(DRIVER, json.dumps(argv), cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(CASES))
def test_each_mistake_is_named_before_anything_runs(outcomes, case):
    root, results = outcomes
    result = results[case]
    assert result["code"] == 2, result
    message = result["stderr"].strip()
    assert "Traceback" not in message
    assert message.startswith("fulmen fit: error: ") and "\n" not in message
    for part in CASES[case][1]:
        assert part in message
    assert "Nothing was run." in message
    assert not (root / "runs").exists()  # no Trainer got as far as a log directory


def test_mistakes_in_a_config_file_name_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "trainer:\n  stratgy: ddp\nmodel:\n  class_path: cli_toy.Regressor\n"
    )
    proc = run_fulmen("fit", "--config", "run.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown key 'trainer.stratgy' (in run.yaml)" in proc.stderr
    assert "'trainer.strategy' (Union[Strategy, str])" in proc.stderr
    (tmp_path / "types.yaml").write_text("model:\n  class_path: cli_toy.Regressor\n  init_args:\n    lr: fast\n")
    proc = run_fulmen("fit", "--config", "types.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "'model.init_args.lr' expects float, got 'fast' (in types.yaml)" in proc.stderr


def test_in_a_script_the_errors_can_be_caught():
    """``parser_kwargs={"exit_on_error": False}``: the same message as an exception."""
    from cli_toy import Points, Regressor

    from fulmen.cli import CLI, FulmenCLIError
    from fulmen.errors import FulmenConfigError

    with pytest.raises(FulmenCLIError, match=r"unknown key 'model.hiden'.*'model.hidden' \(int\)") as info:
        CLI(Regressor, Points, args=["fit", "--model.hiden", "3"], parser_kwargs={"exit_on_error": False})
    assert isinstance(info.value, FulmenConfigError)


def test_run_false_builds_the_objects_without_a_subcommand(tmp_path):
    from cli_toy import Points, Regressor

    from fulmen.cli import CLI

    cli = CLI(Regressor, Points, run=False, trainer_defaults={"max_epochs": 5, "max_steps": 7},
              args=["--model.hidden", "3", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.subcommand is None and cli.model.hparams.hidden == 3 and isinstance(cli.datamodule, Points)
    # trainer_defaults beat the Trainer's defaults; what is typed beats trainer_defaults
    assert (cli.trainer.max_epochs, cli.trainer.max_steps) == (1, 7)


def test_args_as_a_dict_is_a_config_and_is_checked_too(tmp_path):
    from cli_toy import Points, Regressor

    from fulmen.cli import CLI, FulmenCLIError

    cli = CLI(Regressor, Points, run=False, args={"model": {"hidden": 2}, "trainer": {"default_root_dir": str(tmp_path)}})
    assert cli.model.hparams.hidden == 2
    with pytest.raises(FulmenCLIError, match=r"unknown key 'trainer.max_epoch'.*'trainer.max_epochs'"):
        CLI(Regressor, Points, args={"fit": {"trainer": {"max_epoch": 1}}}, parser_kwargs={"exit_on_error": False})
