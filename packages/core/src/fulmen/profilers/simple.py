"""``SimpleProfiler``: wall-clock time per action, as a table at the end of the run."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

from fulmen.profilers.base import Profiler


class SimpleProfiler(Profiler):
    """Times each action with ``time.perf_counter`` and reports, per action, the mean
    duration, the number of calls, the total time and its share of the whole run.

    Each action keeps a running count and total, not a list of durations, so a long run
    costs the same memory as a short one.

    Args:
        dirpath, filename: where the report goes (see ``fulmen.profilers.Profiler``).
        extended: also report the number of calls and the percentage of the run's time
            (``False``: mean and total only).
    """

    def __init__(self, dirpath: Optional[str | os.PathLike] = None, filename: Optional[str] = None, extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.extended = extended
        self._reset()

    def _reset(self) -> None:
        self.current_actions: Dict[str, float] = {}
        self._totals: Dict[str, List[float]] = {}  # action → [calls, seconds]
        self.start_time = time.perf_counter()

    def setup(self, stage: Optional[str] = None, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        super().setup(stage=stage, local_rank=local_rank, log_dir=log_dir)
        self._reset()  # one report per stage: test() after fit() does not repeat fit's rows

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"profiler action {action_name!r} was started again before it was stopped")
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        started = self.current_actions.pop(action_name, None)
        if started is None:
            raise ValueError(f"profiler action {action_name!r} was stopped but never started")
        record = self._totals.get(action_name)
        if record is None:
            self._totals[action_name] = [1, end - started]
        else:
            record[0] += 1
            record[1] += end - started

    @property
    def recorded_durations(self) -> Dict[str, Dict[str, float]]:
        """``{action: {"calls": n, "total": seconds, "mean": seconds}}`` of what was recorded."""
        return {name: {"calls": int(n), "total": t, "mean": t / n} for name, (n, t) in self._totals.items()}

    def summary(self) -> str:
        if not self._totals:
            return ""
        run_time = time.perf_counter() - self.start_time
        rows = sorted(self.recorded_durations.items(), key=lambda item: item[1]["total"], reverse=True)
        if self.extended:
            header = ["Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"]
            total_calls = sum(r["calls"] for _, r in rows)
            body = [["Total", "-", str(total_calls), f"{run_time:.5g}", "100 %"]]
            body += [
                [name, f"{r['mean']:.5g}", str(r["calls"]), f"{r['total']:.5g}", f"{100.0 * r['total'] / run_time:.3g}"]
                for name, r in rows
            ]
        else:
            header = ["Action", "Mean duration (s)", "Total time (s)"]
            body = [[name, f"{r['mean']:.5g}", f"{r['total']:.5g}"] for name, r in rows]
        return self._report_title() + "\n\n" + format_table(header, body, total_row=self.extended)


def format_table(header: List[str], rows: List[List[str]], total_row: bool = False) -> str:
    """A ``|``-separated text table; ``total_row``: a rule under the first row too."""
    widths = [max(len(cells[i]) for cells in [header] + rows) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        return "|  " + "  |  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  |"

    rule = "-" * len(line(header))
    out = [rule, line(header), rule]
    for index, cells in enumerate(rows):
        out.append(line(cells))
        if total_row and index == 0:
            out.append(rule)
    out.append(rule)
    return "\n".join(out)
