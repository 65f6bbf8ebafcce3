"""AdvancedProfiler: cProfile statistics per action, from a real CPU fit."""

from __future__ import annotations

import re

import pytest
from helpers import loader, quiet_trainer
from profiler_helpers import CALLBACK_HOOK, STEP, BatchCounter, ProfiledModule, read

from fulmen.errors import FulmenConfigError
from fulmen.profilers import AdvancedProfiler


def _sections(report: str):
    """{action: its pstats text}."""
    parts = re.split(r"^Profile stats for: (.+)$", report, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_fit_report_has_pstats_for_the_training_step(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=AdvancedProfiler(filename="perf"), logger=False,
                            enable_checkpointing=False, callbacks=[BatchCounter()])
    trainer.fit(ProfiledModule(), loader(32, batch_size=8))
    report = read(tmp_path / "fit-perf.txt")
    assert report.startswith("FIT Profiler Report")
    sections = _sections(report)
    step = sections[STEP]
    assert "Ordered by: cumulative time" in step and "ncalls" in step
    # the user's training_step ran 4 times inside the action: pstats lists it with 4 calls
    assert re.search(r"^\s+4\s+.*helpers\.py:\d+\(training_step\)$", step, re.MULTILINE), step
    assert re.search(r"^\s+4\s+.*\(on_train_batch_end\)$", sections[CALLBACK_HOOK], re.MULTILINE)
    assert "custom" in sections and "run_training_epoch" in sections
    # nested actions pause the outer one: the step's functions are not counted in the epoch
    assert "(training_step)" not in sections["run_training_epoch"]


def test_line_count_restriction_limits_each_section(tmp_path):
    profiler = AdvancedProfiler(line_count_restriction=3)
    with profiler.profile("work"):
        sorted(str(i) for i in range(100))
    section = _sections(profiler.summary())["work"]
    assert "List reduced from" in section and "due to restriction <3>" in section


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "all"])
def test_bad_line_count_restriction_is_refused(bad):
    with pytest.raises(FulmenConfigError, match="line_count_restriction"):
        AdvancedProfiler(line_count_restriction=bad)


def test_nested_and_repeated_actions_standalone():
    profiler = AdvancedProfiler()
    for _ in range(2):
        with profiler.profile("outer"):
            with profiler.profile("inner"):
                sum(range(1000))
    with pytest.raises(ValueError, match="never started"):
        profiler.stop("missing")
    sections = _sections(profiler.summary())
    assert set(sections) == {"outer", "inner"}
    assert "{built-in method builtins.sum}" in sections["inner"]
    assert "{built-in method builtins.sum}" not in sections["outer"]
