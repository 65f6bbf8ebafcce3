"""``FULMEN_TRACE_PLUGINS``: one line per hook call, naming the implementations in the
order they ran with their time; the registration hooks too. Off by default."""

from __future__ import annotations

import logging
import re

import pytest
from helpers import BoringModule, loader, quiet_trainer

import fulmen
from fulmen.plugins import tracing

LINE = re.compile(r"^fulmen\.trace (\w+) (\d+\.\d{3})ms: (.*)$")


class First(fulmen.Callback):
    def on_train_batch_end(self, trainer):
        pass


class Second(fulmen.Callback):
    def on_train_batch_end(self, batch_idx):
        pass

    def on_fit_start(self):
        pass


class Model(BoringModule):
    def on_train_batch_end(self):
        pass

    def on_fit_start(self):
        pass


class Auditor:
    """A hook object passed in ``plugins=``: a plugin module without packaging."""

    @fulmen.hookimpl
    def on_fit_start(self, trainer):
        pass

    @fulmen.hookimpl
    def on_train_batch_end(self, outputs):
        pass


class Early:
    @fulmen.hookimpl(tryfirst=True)
    def on_fit_start(self):
        pass


def fit(tmp_path, steps=2):
    trainer = quiet_trainer(tmp_path, max_steps=steps, logger=False, enable_checkpointing=False,
                            callbacks=[First(), Second()], plugins=[Auditor(), Early()])
    trainer.fit(Model(), loader())
    return trainer


def calls(text):
    """{hook: [[(plugin, ms), ...] per call]} from the traced lines."""
    found = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            parts = [p.rsplit(" ", 1) for p in match.group(3).split(", ")]
            found.setdefault(match.group(1), []).append([(name, float(ms[:-2])) for name, ms in parts])
    return found


def test_each_hook_call_lists_implementations_in_call_order_with_times(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(tracing.ENV_TRACE, "1")
    fit(tmp_path)
    traced = calls(capsys.readouterr().err)

    # Callbacks in list order, then the module, then plugin objects; tryfirst moves to the front.
    assert [[name for name, _ in call] for call in traced["on_train_batch_end"]] == [
        ["callback:First", "callback:Second", "module:Model", "plugin:Auditor"]] * 2
    assert [name for name, _ in traced["on_fit_start"][0]] == ["plugin:Early", "callback:Second", "module:Model",
                                                               "plugin:Auditor"]
    assert all(ms >= 0 for call in traced["on_train_batch_end"] for _, ms in call)
    # Registration hooks are traced per plugin: the built-ins go first, so they win names.
    assert traced["register_strategies"][0][0][0] == "fulmen"
    assert {"register_loggers", "register_precisions", "register_checkpoint_io"} <= set(traced)


def test_tracing_is_off_by_default_and_the_relay_keeps_its_fast_path(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(tracing.ENV_TRACE, raising=False)
    trainer = fit(tmp_path, steps=1)
    assert "fulmen.trace" not in capsys.readouterr().err
    assert getattr(trainer.fabric.plugin_manager, "_fulmen_tracer", None) is None
    assert "on_train_batch_end" in trainer._relay._direct


def test_trace_to_the_logging_system(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(tracing.ENV_TRACE, "logging")
    with caplog.at_level(logging.INFO, logger=tracing.LOGGER_NAME):
        fit(tmp_path, steps=1)
    messages = [r.getMessage() for r in caplog.records if r.name == tracing.LOGGER_NAME]
    assert any(m.startswith("fulmen.trace on_train_batch_end ") for m in messages)


def test_trace_to_a_file_per_rank(tmp_path, monkeypatch):
    monkeypatch.setenv(tracing.ENV_TRACE, str(tmp_path / "trace-{rank}.log"))
    monkeypatch.setenv("RANK", "3")
    fit(tmp_path, steps=1)
    text = (tmp_path / "trace-3.log").read_text()
    assert calls(text)["on_train_batch_end"][0][0][0] == "callback:First"


def test_a_hook_that_raises_is_traced_as_raising(tmp_path, monkeypatch, capsys):
    class Failing(fulmen.Callback):
        def on_train_start(self):
            raise ValueError("callback bug")

    monkeypatch.setenv(tracing.ENV_TRACE, "stderr")
    trainer = quiet_trainer(tmp_path, max_steps=1, logger=False, enable_checkpointing=False, callbacks=[Failing()])
    with pytest.raises(ValueError, match="callback bug"):
        trainer.fit(Model(), loader())
    assert re.search(r"fulmen\.trace on_train_start \d+\.\d{3}ms raised ValueError: callback:\S*Failing \d",
                     capsys.readouterr().err)
