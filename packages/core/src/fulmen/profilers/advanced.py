"""``AdvancedProfiler``: Python's cProfile per action, reported with pstats."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
from typing import Dict, List, Optional, Union

from fulmen.errors import FulmenConfigError
from fulmen.profilers.base import Profiler


class AdvancedProfiler(Profiler):
    """Runs a ``cProfile.Profile`` for each action and reports every action's function
    statistics (sorted by cumulative time).

    Only one cProfile can be active in a thread (Python 3.12 refuses a second one; older
    versions silently take the events away from the first). So when an action starts inside
    another one, the outer action's profile pauses until the inner one stops: each
    function's time is reported under the innermost action running it, never twice.
    ``run_training_epoch`` therefore shows the loop's own work; the training step, backward
    and the hooks have their own entries.

    Args:
        dirpath, filename: where the report goes (see ``fulmen.profilers.Profiler``).
        line_count_restriction: how many lines of each action's statistics to print: a
            count (int) or a fraction of them (float in (0, 1]), as ``pstats.print_stats``.
    """

    def __init__(
        self,
        dirpath: Optional[Union[str, os.PathLike]] = None,
        filename: Optional[str] = None,
        line_count_restriction: Union[int, float] = 1.0,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        if isinstance(line_count_restriction, bool) or not (
            isinstance(line_count_restriction, int) and line_count_restriction > 0
            or isinstance(line_count_restriction, float) and 0.0 < line_count_restriction <= 1.0
        ):
            raise FulmenConfigError(
                f"line_count_restriction={line_count_restriction!r}: give a line count (int > 0) "
                "or a fraction of the lines (float in (0, 1])"
            )
        self.line_count_restriction = line_count_restriction
        self.profiled_actions: Dict[str, cProfile.Profile] = {}
        self._running: List[str] = []  # started actions, innermost last; only that one is enabled

    def setup(self, stage: Optional[str] = None, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        super().setup(stage=stage, local_rank=local_rank, log_dir=log_dir)
        self.profiled_actions = {}
        self._running = []

    def start(self, action_name: str) -> None:
        if action_name in self._running:
            raise ValueError(f"profiler action {action_name!r} was started again before it was stopped")
        if self._running:
            self.profiled_actions[self._running[-1]].disable()
        profile = self.profiled_actions.get(action_name)
        if profile is None:
            profile = self.profiled_actions[action_name] = cProfile.Profile()
        self._running.append(action_name)
        profile.enable()

    def stop(self, action_name: str) -> None:
        if action_name not in self._running:
            raise ValueError(f"profiler action {action_name!r} was stopped but never started")
        if self._running[-1] == action_name:
            self.profiled_actions[action_name].disable()
            self._running.pop()
            if self._running:
                self.profiled_actions[self._running[-1]].enable()
        else:  # stopped out of order: it is paused already, just forget it
            self._running.remove(action_name)

    def summary(self) -> str:
        for name in reversed(self._running):  # a report in the middle of an action
            self.profiled_actions[name].disable()
        sections = []
        for name, profile in self.profiled_actions.items():
            stream = io.StringIO()
            try:
                stats = pstats.Stats(profile, stream=stream)
            except TypeError:  # never enabled long enough to record a call
                continue
            stats.strip_dirs().sort_stats("cumulative").print_stats(self.line_count_restriction)
            sections.append(f"Profile stats for: {name}\n{stream.getvalue()}")
        if self._running:
            self.profiled_actions[self._running[-1]].enable()
        if not sections:
            return ""
        return self._report_title() + "\n\n" + "\n".join(sections)

    def teardown(self, stage: Optional[str] = None) -> None:
        for name in reversed(self._running):
            self.profiled_actions[name].disable()
        self._running = []
