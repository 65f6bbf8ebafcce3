"""What every profiler shares: the action API, the report's destination, the no-op profiler.

A profiler only times *actions*, named strings that are started and stopped. Which actions
a run has is the Trainer's business (``fulmen.trainer.profiling``); a profiler can therefore
also be used on its own, around any code, by Fabric users and in plain scripts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Generator, Optional

from fulmen.errors import FulmenConfigError


class Profiler:
    """Base class of profilers: subclass it, implement ``start``, ``stop`` and ``summary``,
    and register the class with the ``register_profilers`` hook to make it a
    ``Trainer(profiler=name)``.

    Args:
        dirpath: where the report file goes; ``None``: the Trainer's ``log_dir`` (and the
            current directory when used on its own).
        filename: the report's file name without extension. ``None``: no file, the report
            is printed on global rank zero instead (Lightning's behaviour).
    """

    def __init__(self, dirpath: Optional[str | os.PathLike] = None, filename: Optional[str] = None) -> None:
        if filename is not None and (not isinstance(filename, str) or not filename or os.sep in filename):
            raise FulmenConfigError(
                f"profiler filename={filename!r} must be a plain file name without a directory "
                "(the directory goes in dirpath=)"
            )
        self.dirpath = dirpath
        self.filename = filename
        self._stage: Optional[str] = None
        self._local_rank: Optional[int] = None

    # ------------------------------------------------------------------ actions
    def start(self, action_name: str) -> None:
        """Start timing ``action_name``."""
        raise NotImplementedError(f"{type(self).__name__} must implement start(action_name)")

    def stop(self, action_name: str) -> None:
        """Stop timing ``action_name``, started before with ``start``."""
        raise NotImplementedError(f"{type(self).__name__} must implement stop(action_name)")

    @contextmanager
    def profile(self, action_name: str) -> Generator[str, None, None]:
        """``with profiler.profile("name"):`` times the block, also when it raises."""
        self.start(action_name)
        try:
            yield action_name
        finally:
            self.stop(action_name)

    # ------------------------------------------------------------------ report
    def summary(self) -> str:
        """The report's text; empty when there is nothing to report."""
        raise NotImplementedError(f"{type(self).__name__} must implement summary()")

    def describe(self) -> None:
        """Deliver the report: to ``dirpath/{stage}-{filename}[-{local_rank}].txt`` when a
        filename was given (each process its own file), else printed on global rank zero.
        The Trainer calls it when a stage ends; standalone users call it themselves."""
        try:
            text = self.summary()
            if not text:
                return
            if self.filename is not None:
                path = self._output_path(".txt")
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                with open(path, "w", encoding="utf-8") as stream:
                    stream.write(text + "\n")
            elif _is_global_zero():
                print(text)
        finally:
            self.teardown(stage=self._stage)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, stage: Optional[str] = None, local_rank: Optional[int] = None, log_dir: Optional[str] = None) -> None:
        """Called by the Trainer before a stage: ``stage`` names the report, ``local_rank``
        (``None`` in a single process) tells each process's file apart, ``log_dir`` is the
        report's directory unless ``dirpath`` was given."""
        self._stage = stage
        self._local_rank = local_rank
        self.dirpath = self.dirpath if self.dirpath is not None else log_dir

    def teardown(self, stage: Optional[str] = None) -> None:
        """Release what profiling held (open traces, hooks); called at the end of ``describe``."""

    def _output_path(self, extension: str, filename: Optional[str] = None) -> str:
        """``{stage}-{filename}[-{local_rank}]{extension}`` in ``dirpath``, as Lightning names it."""
        name = (f"{self._stage}-" if self._stage else "") + str(filename or self.filename)
        if self._local_rank is not None:
            name += f"-{self._local_rank}"
        return os.path.join(os.fspath(self.dirpath) if self.dirpath is not None else os.getcwd(), name + extension)

    def _report_title(self) -> str:
        return f"{self._stage.upper()} Profiler Report" if self._stage else "Profiler Report"


class PassThroughProfiler(Profiler):
    """The profiler of ``Trainer(profiler=None)``: records nothing, reports nothing.

    It exists so that ``self.trainer.profiler.profile("x")`` in user code works whether or
    not a profiler was chosen; the Trainer itself never calls it per step."""

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass

    def profile(self, action_name: str) -> ContextManager[str]:
        return nullcontext(action_name)  # no generator frame: user code may call it per step

    def summary(self) -> str:
        return ""


def _is_global_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
