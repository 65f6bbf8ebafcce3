"""``ProgressBar``: tqdm bars for training, validation, test and predict.

Metrics shown are the ``prog_bar=True`` ones, read from floats the Trainer already produced
at logging intervals, so the bar never forces a device sync of its own.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, Optional

from fulmen.callbacks.base import Callback


def _fmt(metrics: Dict[str, float]) -> Dict[str, str]:
    return {k: f"{v:.4g}" for k, v in metrics.items()}


class ProgressBar(Callback):
    """The default progress bar: one tqdm bar per training epoch and per evaluation, on rank
    zero only, with the ``prog_bar=True`` metrics.

    Args:
        refresh_rate: redraw every this many batches (fewer redraws, less overhead).
        leave: keep finished evaluation bars on screen.
        file: where to draw (standard error by default).
    """
    def __init__(self, refresh_rate: int = 1, leave: bool = False, file: Any = None) -> None:
        self.refresh_rate = max(1, int(refresh_rate))
        self.leave = leave
        self._file = file
        self._train_bar = None
        self._eval_bar = None
        self._since_update = 0

    def _tqdm(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(file=self._file or sys.stderr, dynamic_ncols=True, mininterval=0.1, **kwargs)

    @staticmethod
    def _total(value) -> Optional[int]:
        if value is None or value == math.inf:
            return None
        return int(value)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer) -> None:
        """Open the epoch's bar (starting where a resumed epoch left off)."""
        if not trainer.is_global_zero:
            return
        if self._train_bar is not None:
            self._train_bar.close()
        self._train_bar = self._tqdm(
            total=self._total(trainer.num_training_batches), desc=f"Epoch {trainer.current_epoch}",
            leave=True, unit="it", initial=trainer.fit_progress.batch_idx,
        )
        self._since_update = 0

    def on_train_batch_end(self, trainer) -> None:
        """Advance, and show the latest metrics at logging intervals."""
        bar = self._train_bar
        if bar is None:
            return
        self._since_update += 1
        pending = self._since_update
        # tqdm.update only adds to its count until ``miniters`` steps have passed since its
        # last print; testing that here skips the call (Python, every step) on the other
        # steps, and tqdm prints exactly when it would have. The count is handed over before
        # anything else shows the bar (evaluation, epoch end).
        if pending >= self.refresh_rate and (bar.disable or bar.n + pending - bar.last_print_n >= bar.miniters):
            bar.update(pending)
            self._since_update = 0
        if trainer.fit_progress.total_batches % trainer.log_every_n_steps == 0 and trainer.progress_bar_metrics:
            bar.set_postfix(_fmt(trainer.progress_bar_metrics), refresh=False)

    def on_train_epoch_end(self, trainer) -> None:
        """Show the epoch's final count and metrics."""
        bar = self._train_bar
        if bar is None:
            return
        if self._since_update:
            bar.update(self._since_update)
            self._since_update = 0
        if trainer.progress_bar_metrics:
            bar.set_postfix(_fmt(trainer.progress_bar_metrics), refresh=False)
        bar.close()
        self._train_bar = None

    def on_train_end(self) -> None:
        """Close the training bar."""
        if self._train_bar is not None:
            self._flush_train_bar()
            self._train_bar.close()
            self._train_bar = None

    # ------------------------------------------------------------------ evaluation
    def _flush_train_bar(self) -> None:
        if self._train_bar is not None and self._since_update:
            self._train_bar.update(self._since_update)
            self._since_update = 0

    def _start_eval(self, trainer, desc: str, totals) -> None:
        if not trainer.is_global_zero:
            return
        self._flush_train_bar()  # the train bar shows the current count under the eval bar
        total = sum(self._total(t) or 0 for t in totals) or None
        self._eval_bar = self._tqdm(total=total, desc=desc, leave=self.leave and trainer.state != "fitting", unit="it")

    def _advance_eval(self) -> None:
        if self._eval_bar is not None:
            self._eval_bar.update(1)

    def _end_eval(self, trainer) -> None:
        if self._eval_bar is not None:
            self._eval_bar.close()
            self._eval_bar = None
        if self._train_bar is not None and trainer.progress_bar_metrics:
            self._train_bar.set_postfix(_fmt(trainer.progress_bar_metrics), refresh=True)

    def on_validation_start(self, trainer) -> None:
        """Open the validation (or sanity check) bar."""
        desc = "Sanity check" if trainer.sanity_checking else "Validation"
        limits = trainer.num_val_batches
        if trainer.sanity_checking and trainer.num_sanity_val_steps >= 0:
            limits = [min(trainer.num_sanity_val_steps, n) for n in limits]
        self._start_eval(trainer, desc, limits)

    def on_validation_batch_end(self) -> None:
        """Advance the validation bar."""
        self._advance_eval()

    def on_validation_end(self, trainer) -> None:
        """Close the validation bar."""
        self._end_eval(trainer)

    def on_test_start(self, trainer) -> None:
        """Open the test bar."""
        self._start_eval(trainer, "Testing", trainer.num_test_batches)

    def on_test_batch_end(self) -> None:
        """Advance the test bar."""
        self._advance_eval()

    def on_test_end(self, trainer) -> None:
        """Close the test bar."""
        self._end_eval(trainer)

    def on_predict_start(self, trainer) -> None:
        """Open the predict bar."""
        self._start_eval(trainer, "Predicting", trainer.num_predict_batches)

    def on_predict_batch_end(self) -> None:
        """Advance the predict bar."""
        self._advance_eval()

    def on_predict_end(self, trainer) -> None:
        """Close the predict bar."""
        self._end_eval(trainer)

    def on_exception(self) -> None:
        """Close every bar so the error is not printed inside one."""
        self._flush_train_bar()
        for bar in (self._train_bar, self._eval_bar):
            if bar is not None:
                bar.close()
        self._train_bar = self._eval_bar = None
