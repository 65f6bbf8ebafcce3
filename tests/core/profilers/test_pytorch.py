"""PyTorchProfiler: the key-averages table and the chrome trace of a real CPU fit."""

from __future__ import annotations

import json

import pytest
from helpers import loader, quiet_trainer
from profiler_helpers import STEP, BatchCounter, ProfiledModule, read

from fulmen.errors import FulmenConfigError
from fulmen.profilers import PyTorchProfiler


def _fit(tmp_path, profiler):
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=profiler, logger=False, enable_checkpointing=False,
                            callbacks=[BatchCounter()], num_sanity_val_steps=0)
    trainer.fit(ProfiledModule(), loader(32, batch_size=8), loader(16, batch_size=8))
    return trainer


def test_report_has_the_key_averages_table_and_the_trace_parses(tmp_path):
    profiler = PyTorchProfiler(filename="perf", row_limit=-1)
    _fit(tmp_path, profiler)
    report = read(tmp_path / "fit-perf.txt")
    assert report.startswith("FIT Profiler Report")
    assert "Self CPU %" in report and "# of Calls" in report and "Self CPU time total" in report
    step_row = next(line for line in report.splitlines() if line.strip().startswith(STEP))
    assert step_row.split()[-1] == "4"  # the table's call count
    assert "aten::mse_loss" in report and "custom" in report
    assert "[module]torch.nn.modules.linear.Linear: layer" in report  # record_module_names
    trace_path = tmp_path / "fit-perf.pt.trace.json"
    assert profiler.chrome_trace_path == str(trace_path)
    trace = json.loads(trace_path.read_text())
    names = [event.get("name") for event in trace["traceEvents"]]
    assert names.count(STEP) == 4 and "[_TrainingEpochLoop].train_dataloader_next" in names


def test_no_chrome_trace_when_not_asked(tmp_path):
    _fit(tmp_path, PyTorchProfiler(filename="perf", export_to_chrome=False, record_module_names=False))
    report = read(tmp_path / "fit-perf.txt")
    assert "[module]" not in report
    assert not list(tmp_path.rglob("*.json"))


def test_a_schedule_advances_once_per_step(tmp_path):
    import torch.profiler

    ready = []
    profiler = PyTorchProfiler(
        filename="perf", schedule=torch.profiler.schedule(wait=1, warmup=1, active=2, repeat=1),
        on_trace_ready=lambda prof: ready.append(prof.step_num),
    )
    _fit(tmp_path, profiler)
    assert ready == [4]  # steps 3 and 4 recorded, then the trace was handed over
    assert not list(tmp_path.rglob("*.json"))  # on_trace_ready decides where traces go


@pytest.mark.parametrize("kwargs, match", [
    (dict(not_an_option=True), "not_an_option"),
    (dict(sort_by_key="speed"), "sort_by_key"),
    (dict(row_limit=0), "row_limit"),
])
def test_bad_settings_are_refused_with_the_accepted_ones(kwargs, match):
    with pytest.raises(FulmenConfigError, match=match):
        PyTorchProfiler(**kwargs)


def test_standalone_around_a_plain_loop(tmp_path):
    import torch

    profiler = PyTorchProfiler(dirpath=tmp_path, filename="loop", sort_by_key="count")
    for _ in range(3):
        with profiler.profile("matmul"):
            torch.randn(8, 8) @ torch.randn(8, 8)
    profiler.describe()
    report = read(tmp_path / "loop.txt")
    assert "matmul" in report and "aten::mm" in report
    json.loads((tmp_path / "loop.pt.trace.json").read_text())
