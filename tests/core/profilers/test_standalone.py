"""Profilers outside the Trainer: a Fabric user's own loop."""

from __future__ import annotations

import pytest
import torch
from helpers import loader
from profiler_helpers import read, simple_rows
from torch import nn

import fulmen
from fulmen.errors import FulmenConfigError
from fulmen.profilers import AdvancedProfiler, SimpleProfiler


@pytest.mark.parametrize("cls", [SimpleProfiler, AdvancedProfiler])
def test_a_fabric_loop_profiled_by_hand(tmp_path, cls):
    fabric = fulmen.Fabric(accelerator="cpu", devices=1)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    data = fabric.setup_dataloaders(loader(32, batch_size=8))
    profiler = cls(dirpath=tmp_path, filename="loop")
    for x, y in data:
        with profiler.profile("forward"):
            loss = nn.functional.mse_loss(model(x), y)
        with profiler.profile("backward"):
            fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    profiler.describe()
    report = read(tmp_path / "loop.txt")  # no stage: no "fit-" prefix
    assert report.startswith("Profiler Report")
    if cls is SimpleProfiler:
        assert simple_rows(report)["forward"]["Num calls"] == "4"
    else:
        assert "Profile stats for: backward" in report and "(backward)" in report


def test_describe_prints_without_a_filename(capsys):
    profiler = SimpleProfiler()
    with profiler.profile("work"):
        pass
    profiler.describe()
    assert simple_rows(capsys.readouterr().out)["work"]["Num calls"] == "1"


def test_a_filename_with_a_directory_is_refused():
    with pytest.raises(FulmenConfigError, match="dirpath="):
        SimpleProfiler(filename="logs/perf")
