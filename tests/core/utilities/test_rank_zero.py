"""fulmen.utilities' Lightning helpers: rank_zero_only and the messages built on it (which
rank they run on, where a warning points, what a fresh process reads from the environment,
what spawned ranks see), is_overridden, and the cli_lightning_logo banner."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import pytest

import fulmen
from fulmen.errors import FulmenDeprecationWarning
from fulmen.utilities import (
    cli_lightning_logo,
    is_overridden,
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from fulmen.utilities import rank_zero as rank_zero_module
from fulmen.utilities.banner import FULMEN_LOGO
from fulmen.utilities.rank_zero import RANK_ENVIRONMENT_VARIABLES, rank_from_environment, set_rank

from rank_zero_workers import report_rank


@pytest.fixture
def as_rank():
    """Run the test body as if this process had the given global rank; restored after."""
    saved = rank_zero_only.rank
    yield set_rank
    set_rank(saved)


@pytest.fixture
def clean_rank_environment(monkeypatch):
    for key in RANK_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------ rank_zero_only
def test_rank_zero_only_runs_on_rank_zero_and_returns_the_default_elsewhere(as_rank):
    calls = []

    @rank_zero_only
    def record(value):
        calls.append(value)
        return value + 1

    as_rank(0)
    assert record(1) == 2
    as_rank(1)
    assert record(2) is None
    assert calls == [1]
    assert record.__name__ == "record"  # functools.wraps: the decorated function keeps its name

    def answer():
        return "zero"

    guarded = rank_zero_only(answer, default="not zero")
    assert guarded() == "not zero"
    as_rank(0)
    assert guarded() == "zero"


def test_the_rank_is_read_at_call_time_not_at_decoration(as_rank):
    as_rank(3)

    @rank_zero_only
    def hello():
        return "hi"

    assert hello() is None
    as_rank(0)  # what a strategy does once the processes are laid out
    assert hello() == "hi"


def test_rank_from_environment_follows_lightnings_order(clean_rank_environment):
    env = clean_rank_environment
    assert rank_from_environment() == 0
    env.setenv("JSM_NAMESPACE_RANK", "4")
    assert rank_from_environment() == 4
    env.setenv("SLURM_PROCID", "3")
    assert rank_from_environment() == 3
    env.setenv("LOCAL_RANK", "2")  # before SLURM_PROCID: SLURM may set it without starting us
    assert rank_from_environment() == 2
    env.setenv("RANK", "1")
    assert rank_from_environment() == 1
    env.setenv("RANK", "not-a-number")  # a malformed value is passed over, not fatal
    assert rank_from_environment() == 2


def _fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in RANK_ENVIRONMENT_VARIABLES}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})


def test_a_fresh_process_takes_its_rank_from_the_launchers_environment():
    code = "from fulmen.utilities import rank_zero_only; print(rank_zero_only.rank)"
    assert _fresh_python(code).stdout.strip() == "0"
    assert _fresh_python(code, RANK="1").stdout.strip() == "1"
    assert _fresh_python(code, SLURM_PROCID="5").stdout.strip() == "5"


def test_spawned_ranks_get_their_rank_from_the_strategy_not_a_misleading_environment(tmp_path, monkeypatch):
    # SLURM_PROCID alone (no SLURM job step) says "rank 1" to every process that reads it.
    monkeypatch.setenv("SLURM_PROCID", "1")
    fabric = fulmen.Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
    fabric.launch(report_rank, str(tmp_path))
    reports = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    assert [r["rank_zero_only.rank"] for r in reports] == [0, 1]
    assert [r["decorated"] for r in reports] == [42, None]
    assert [r["warnings"] for r in reports] == [["once per job"], []]


# ------------------------------------------------------------------------------ messages
def _warns_here():
    rank_zero_warn("careful", category=RuntimeWarning)  # the line the warning must name


def _deprecated_api():
    rank_zero_deprecation("old_api is deprecated; use new_api")


def _calls_the_deprecated_api():
    _deprecated_api()  # the line the deprecation must name: the code that uses the old API


def test_rank_zero_warn_warns_once_per_job_pointing_at_its_caller(as_rank):
    as_rank(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warns_here()
    assert len(caught) == 1
    warning = caught[0]
    assert warning.category is RuntimeWarning and str(warning.message) == "careful"
    assert warning.filename == __file__ and warning.lineno == _warns_here.__code__.co_firstlineno + 1

    as_rank(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warns_here()
    assert caught == []


def test_rank_zero_warn_keeps_lightnings_stacklevel_numbers(as_rank):
    as_rank(0)

    def helper():
        rank_zero_warn("from the helper's caller", stacklevel=5)  # Lightning's 4 + 1: the caller

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        helper()  # this line
        expected = sys._getframe().f_lineno - 1
    assert caught[0].lineno == expected and caught[0].filename == __file__


def test_rank_zero_deprecation_blames_the_code_using_the_deprecated_api(as_rank):
    as_rank(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _calls_the_deprecated_api()
    assert len(caught) == 1
    assert issubclass(caught[0].category, FulmenDeprecationWarning)
    assert issubclass(caught[0].category, DeprecationWarning)
    assert caught[0].lineno == _calls_the_deprecated_api.__code__.co_firstlineno + 1
    with pytest.warns(UserWarning, match="custom"):
        rank_zero_deprecation("custom", category=UserWarning)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def collected():
    handler = _Collect()
    logger = logging.getLogger(rank_zero_module.__name__)
    logger.addHandler(handler)
    saved_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(saved_level)


def test_rank_zero_info_and_debug_log_on_rank_zero_only_naming_the_caller(as_rank, collected):
    as_rank(0)
    rank_zero_info("epoch %d done", 3)
    line = sys._getframe().f_lineno - 1
    rank_zero_debug("details")
    as_rank(1)
    rank_zero_info("not from rank 1")
    rank_zero_debug("nor this")
    assert [(r.levelno, r.getMessage()) for r in collected] == [(logging.INFO, "epoch 3 done"), (logging.DEBUG, "details")]
    assert collected[0].pathname == __file__ and collected[0].lineno == line


def test_rank_zero_info_is_seen_without_any_logging_setup_and_defers_to_one():
    shown = _fresh_python("from fulmen.utilities import rank_zero_info; rank_zero_info('hello %s', 'there')")
    assert shown.returncode == 0 and shown.stderr.strip() == "hello there"
    assert _fresh_python("from fulmen.utilities import rank_zero_info; rank_zero_info('x')", RANK="1").stderr == ""
    configured = _fresh_python(
        "import logging; logging.basicConfig(format='APP %(name)s %(message)s', level=logging.INFO);"
        "from fulmen.utilities import rank_zero_info; rank_zero_info('mine')"
    )
    assert configured.stderr.strip() == "APP fulmen.utilities.rank_zero mine"


# ------------------------------------------------------------------------------ is_overridden
class _Plain(fulmen.Module):
    pass


class _Trains(fulmen.Module):
    def training_step(self, batch, batch_idx):
        return batch.sum()

    def validation_step(self, batch, batch_idx):  # the base Module does not define it
        return None


class _Watcher(fulmen.Callback):
    def on_train_epoch_end(self, trainer):
        pass


class _Data(fulmen.DataModule):
    def prepare_data(self):
        pass


def _logged(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class _DecoratedOverride(fulmen.Module):
    @_logged
    def configure_optimizers(self):
        return None


def test_is_overridden_tells_user_methods_from_the_base_class():
    assert is_overridden("training_step", _Trains())
    assert not is_overridden("training_step", _Plain())
    assert is_overridden("validation_step", _Trains())  # defined where the base has none
    assert not is_overridden("validation_step", _Plain())
    assert is_overridden("configure_optimizers", _DecoratedOverride())  # through functools.wraps
    assert is_overridden("on_train_epoch_end", _Watcher())
    assert not is_overridden("on_fit_start", _Watcher())
    assert is_overridden("prepare_data", _Data())
    assert not is_overridden("setup", _Data())


def test_is_overridden_with_an_explicit_parent_an_instance_attribute_and_none():
    class Base:
        def step(self):
            pass

    class Child(Base):
        def step(self):
            pass

    class Same(Base):
        pass

    assert is_overridden("step", Child(), parent=Base)
    assert not is_overridden("step", Same(), parent=Base)
    patched = Same()
    patched.step = lambda: None  # replaced on the instance: overridden too
    assert is_overridden("step", patched, parent=Base)
    assert not is_overridden("training_step", None)  # e.g. trainer.datamodule when there is none


def test_is_overridden_without_a_fulmen_base_asks_for_parent():
    with pytest.raises(ValueError, match="pass the base class as parent="):
        is_overridden("forward", object())


# ------------------------------------------------------------------------------ the banner
def test_cli_lightning_logo_prints_fulmens_banner_on_rank_zero_only(capsys, as_rank):
    as_rank(0)
    cli_lightning_logo()
    out = capsys.readouterr().out
    assert FULMEN_LOGO.strip("\n") in out and "\033[" not in out  # not a terminal: no colour codes
    assert out.startswith("\n") and out.endswith("\n\n")
    as_rank(1)
    cli_lightning_logo()
    assert capsys.readouterr().out == ""


def test_the_helpers_load_lazily_and_keep_import_fulmen_light():
    code = (
        "import sys, fulmen, fulmen.utilities;"
        "print(sorted(m for m in sys.modules if m.startswith('fulmen.utilities.')));"
        "from fulmen.utilities import rank_zero_warn;"
        "print('torch' in sys.modules)"
    )
    result = _fresh_python(code)
    lines = result.stdout.splitlines()
    assert lines == ["[]", "False"], result.stderr
