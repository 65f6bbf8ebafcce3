"""SimpleProfiler in real CPU fit/validate/test runs: the report file and its counts."""

from __future__ import annotations

import pytest
from helpers import loader, quiet_trainer
from profiler_helpers import CALLBACK_HOOK, FETCH, MODULE_HOOK, STEP, VAL_STEP, BatchCounter, ProfiledModule, read, simple_rows

from fulmen.profilers import SimpleProfiler


def _fit(tmp_path, profiler, epochs=2, batches=4, **kwargs):
    counter = BatchCounter()
    trainer = quiet_trainer(
        tmp_path, max_epochs=epochs, profiler=profiler, callbacks=[counter], logger=False,
        enable_checkpointing=False, num_sanity_val_steps=0, **kwargs,
    )
    model = ProfiledModule()
    trainer.fit(model, loader(8 * batches, batch_size=8), loader(16, batch_size=8))
    return trainer, model, counter


def test_fit_report_counts_each_action_once_per_batch(tmp_path):
    trainer, _, counter = _fit(tmp_path, SimpleProfiler(filename="perf"))
    rows = simple_rows(read(tmp_path / "fit-perf.txt"))  # dirpath: the trainer's log_dir
    assert counter.batches == 8
    for action in (STEP, FETCH, CALLBACK_HOOK, "custom", "[Strategy]SingleDeviceStrategy.backward",
                   "[Strategy]SingleDeviceStrategy.optimizer_step", "[Strategy]SingleDeviceStrategy.zero_grad"):
        assert rows[action]["Num calls"] == "8", (action, rows.get(action))
    assert rows["run_training_epoch"]["Num calls"] == "2"
    assert rows[MODULE_HOOK]["Num calls"] == "2"
    assert rows[VAL_STEP]["Num calls"] == "4"  # 2 batches after each of 2 epochs
    assert rows["Total"]["Percentage %"] == "100 %"
    total = float(rows["Total"]["Total time (s)"])
    assert 0 < float(rows[STEP]["Total time (s)"]) <= float(rows["run_training_epoch"]["Total time (s)"]) <= total


def test_accumulation_counts_optimizer_steps_not_batches(tmp_path):
    _fit(tmp_path, SimpleProfiler(filename="perf"), epochs=1, batches=4, accumulate_grad_batches=2)
    rows = simple_rows(read(tmp_path / "fit-perf.txt"))
    assert rows[STEP]["Num calls"] == "4"
    assert rows["[Strategy]SingleDeviceStrategy.backward"]["Num calls"] == "4"
    assert rows["[Strategy]SingleDeviceStrategy.optimizer_step"]["Num calls"] == "2"


def test_each_stage_writes_its_own_report(tmp_path):
    profiler = SimpleProfiler(dirpath=tmp_path / "prof", filename="perf")
    trainer, model, _ = _fit(tmp_path, profiler, epochs=1)
    trainer.test(model, loader(24, batch_size=8), verbose=False)
    fit_rows = simple_rows(read(tmp_path / "prof" / "fit-perf.txt"))
    test_report = read(tmp_path / "prof" / "test-perf.txt")
    test_rows = simple_rows(test_report)
    assert test_report.startswith("TEST Profiler Report")
    assert test_rows["[Strategy]SingleDeviceStrategy.test_step"]["Num calls"] == "3"
    assert test_rows["[_EvaluationLoop].test_next"]["Num calls"] >= "3"
    assert STEP not in test_rows and STEP in fit_rows  # the test report is the test stage's only


def test_without_filename_the_report_is_printed(tmp_path, capsys):
    _fit(tmp_path, "simple", epochs=1)
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out
    assert simple_rows(out[out.index("FIT Profiler Report"):])[STEP]["Num calls"] == "4"
    assert not list(tmp_path.rglob("*.txt"))


def test_not_extended_reports_mean_and_total_only(tmp_path):
    _fit(tmp_path, SimpleProfiler(filename="perf", extended=False), epochs=1)
    rows = simple_rows(read(tmp_path / "fit-perf.txt"))
    assert set(rows[STEP]) == {"Action", "Mean duration (s)", "Total time (s)"}
    assert "Total" not in rows


def test_a_failing_run_still_reports_and_restores_the_plain_path(tmp_path):
    class Breaks(ProfiledModule):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(tmp_path, max_epochs=1, profiler=SimpleProfiler(filename="perf"), logger=False,
                            enable_checkpointing=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Breaks(), loader(32, batch_size=8))
    rows = simple_rows(read(tmp_path / "fit-perf.txt"))
    assert rows["custom"]["Num calls"] == "2"
    assert "_step" not in vars(trainer) and "_train_iterator" not in vars(trainer)
    assert not {"backward", "optimizer_step", "zero_grad"} & set(vars(trainer.strategy))


def test_standalone_start_stop_errors_and_summary():
    profiler = SimpleProfiler()
    for _ in range(3):
        with profiler.profile("load"):
            pass
    assert profiler.recorded_durations["load"]["calls"] == 3
    with pytest.raises(ValueError, match="never started"):
        profiler.stop("save")
    profiler.start("save")
    with pytest.raises(ValueError, match="started again"):
        profiler.start("save")
    assert simple_rows(profiler.summary())["load"]["Num calls"] == "3"
