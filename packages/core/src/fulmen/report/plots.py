"""The report's figures: the run's metrics grouped into training curves, validation curves,
learning rates and the rest, one PNG each, drawn with matplotlib's Agg backend (no display).

matplotlib is imported here only (``fulmen[report]``), never by ``import fulmen``. Each metric
keeps one colour across every figure of the page, so ``train_loss`` and ``val_loss`` read as
different lines wherever they appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from fulmen.errors import FulmenConfigError
from fulmen.report.run import Run, Series

# matplotlib's default cycle ("tab10"), fixed here so a metric's colour does not depend on
# the user's matplotlibrc.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
HIDDEN = {"epoch"}  # a counter, not a curve; the x axis is the step


@dataclass
class Figure:
    """One written PNG and what it shows."""

    key: str
    title: str
    path: Path
    metrics: List[str]


def group_of(name: str) -> str:
    """Which figure a metric goes in: ``lr``, ``val``, ``train`` or ``other``."""
    lowered = name.lower()
    if lowered.startswith(("lr", "learning_rate", "lr-")) or "learning_rate" in lowered or "/lr" in lowered:
        return "lr"
    if lowered.startswith(("val", "valid")) or "val_" in lowered or "/val" in lowered or "_val" in lowered:
        return "val"
    if lowered.startswith(("test", "predict")) or "test_" in lowered or "/test" in lowered:
        return "other"  # logged once, after training: not a training curve
    if "train" in lowered or "loss" in lowered:
        return "train"
    return "other"


GROUPS = [
    ("train", "Training curves"),
    ("val", "Validation curves"),
    ("lr", "Learning rates"),
    ("other", "Other metrics"),
]


def colours(run: Run) -> Dict[str, str]:
    """One colour per plotted metric, in order of the figures (training first)."""
    names = [n for key, _ in GROUPS for n in sorted(run.metrics) if n not in HIDDEN and group_of(n) == key]
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def import_pyplot():
    """matplotlib's pyplot on the Agg backend, or a clear error saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise FulmenConfigError(
            'fulmen report draws its figures with matplotlib, which is not installed: pip install "fulmen[report]"'
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def draw(run: Run, out_dir: Path) -> List[Figure]:
    """Write one PNG per non-empty group into ``out_dir`` and return them, in page order."""
    plt = import_pyplot()
    colour = colours(run)
    figures: List[Figure] = []
    for key, title in GROUPS:
        names = [n for n in sorted(run.metrics) if n not in HIDDEN and group_of(n) == key]
        if not names:
            continue
        path = out_dir / f"{key}.png"
        _plot(plt, title, {n: run.metrics[n] for n in names}, colour, path, log_y=key == "lr")
        figures.append(Figure(key=key, title=title, path=path, metrics=names))
    return figures


def _plot(plt, title: str, series: Dict[str, Series], colour: Dict[str, str], path: Path, log_y: bool) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    try:
        for name, points in series.items():
            steps = [s for s, _ in points]
            values = [v for _, v in points]
            # One point only (a single validation) is invisible as a line: mark it.
            marker = "o" if len(points) < 30 else None
            ax.plot(steps, values, label=name, color=colour[name], linewidth=2.2, marker=marker, markersize=4)
        positive = all(v > 0 for points in series.values() for _, v in points)
        spread = [v for points in series.values() for _, v in points]
        if log_y and positive and spread and max(spread) / min(spread) > 20:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
