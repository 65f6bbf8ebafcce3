"""``fulmen report RUN_DIR``: a picture of a run logged by the CSV logger, with no tracker.

It reads the run directory (:mod:`fulmen.report.run`), draws the curves
(:mod:`fulmen.report.plots`, matplotlib from ``fulmen[report]``) and writes one self-contained
HTML page (:mod:`fulmen.report.page`) next to the PNGs: training and validation curves,
learning rates, a table of every metric, the hyperparameters and the checkpoints ranked as
ModelCheckpoint kept them. Importing this package imports neither matplotlib nor torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["write_report"]


def write_report(
    run_dir: os.PathLike, output: Optional[os.PathLike] = None, checkpoint_dir: Optional[os.PathLike] = None
) -> Path:
    """Write ``index.html`` and the figures' PNGs into ``output`` (default ``RUN_DIR/report``)
    and return the page's path. Raises ``FulmenConfigError`` for a directory that is not a CSV
    logger run, or when matplotlib is missing."""
    from fulmen.report import page, plots
    from fulmen.report.run import read_checkpoints, read_run

    run = read_run(run_dir)
    if checkpoint_dir is not None:
        read_checkpoints(run, Path(checkpoint_dir))
    plots.import_pyplot()  # before writing anything: a missing extra leaves no half report
    out = Path(output) if output is not None else run.directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.draw(run, out)
    index = out / "index.html"
    index.write_text(page.render(run, figures), encoding="utf-8")
    return index
