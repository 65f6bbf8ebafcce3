"""The report's HTML page: one file with everything inlined (figures as base64 ``data:`` URIs,
the style in a ``<style>`` element), so it can be mailed, attached to a ticket or opened on
a machine without network, and shows the same everywhere."""

from __future__ import annotations

import base64
import datetime
import html
import math
from typing import Any, Iterable, List, Optional, Tuple

from fulmen.report.plots import HIDDEN, Figure, colours
from fulmen.report.run import Run

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #222; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.sub { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.best { font-weight: bold; color: #1a7f37; } .note { color: #9a6700; }
"""


def render(run: Run, figures: List[Figure]) -> str:
    """The whole page as a string."""
    title = f"fulmen report: {run.directory.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="sub">{_e(str(run.directory.resolve()))} &middot; {_e(_summary_line(run))} &middot; '
        f"written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</div>",
    ]
    parts += [f'<p class="note">{_e(note)}</p>' for note in run.notes]
    parts.append(_metrics_table(run))
    parts.append('<h2 id="curves">Curves</h2>')
    if not figures:
        parts.append("<p>No metric has a numeric value yet.</p>")
    for figure in figures:
        data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        alt = f"{figure.title}: {', '.join(figure.metrics)}"
        parts.append(
            f'<figure id="{_e(figure.key)}"><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption class=\"sub\">{_e(alt)}</figcaption></figure>"
        )
    parts.append(_hparams_table(run))
    parts.append(_checkpoints_table(run))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (value == 0 or 1e-3 <= abs(value) < 1e5):
        return f"{value:.5g}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary_line(run: Run) -> str:
    last = run.last_step
    epochs = run.metrics.get("epoch")
    text = f"{len(run.metrics)} metric(s), last step {last}" if last is not None else "no metrics logged yet"
    if epochs:
        text += f", epoch {int(max(v for _, v in epochs))}"
    return text


def _table(header: Iterable[str], rows: Iterable[Tuple[str, ...]], numeric: Iterable[int] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>" for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics_table(run: Run) -> str:
    """Last, lowest and highest value of each metric, with the step it was reached at."""
    colour = colours(run)
    rows = []
    for name in sorted(run.metrics):
        if name in HIDDEN:
            continue
        points = run.metrics[name]
        low = min(points, key=lambda p: p[1])
        high = max(points, key=lambda p: p[1])
        swatch = f'<span class="swatch" style="background:{colour[name]}"></span>' if name in colour else ""
        rows.append((
            f"{swatch}{_e(name)}",
            _fmt(points[-1][1]),
            str(points[-1][0]),
            f"{_fmt(low[1])} (step {low[0]})",
            f"{_fmt(high[1])} (step {high[0]})",
            str(len(points)),
        ))
    if not rows:
        return ""
    return '<h2 id="summary">Metrics</h2>' + _table(
        ["metric", "last", "at step", "lowest", "highest", "values"], rows, numeric=(1, 2, 5)
    )


def _hparams_table(run: Run) -> str:
    if not run.hparams:
        return '<h2 id="hparams">Hyperparameters</h2><p>None were logged (call save_hyperparameters()).</p>'
    rows = [(f"<code>{_e(k)}</code>", _e(_plain(v))) for k, v in sorted(run.hparams.items())]
    return '<h2 id="hparams">Hyperparameters</h2>' + _table(["name", "value"], rows)


def _plain(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


def _checkpoints_table(run: Run) -> str:
    section = '<h2 id="checkpoints">Checkpoints</h2>'
    if not run.checkpoints:
        return section + f"<p>No checkpoint files in {_e(str(run.directory / 'checkpoints'))}.</p>"
    scored = [c for c in run.checkpoints if c.score is not None]
    reverse = run.mode == "max"
    ordered = sorted(scored, key=lambda c: c.score, reverse=reverse) + [c for c in run.checkpoints if c.score is None]
    monitor = run.monitor or "score"
    rows = []
    for rank, checkpoint in enumerate(ordered, 1):
        marks = [m for m, on in (("best", checkpoint.best), ("last", checkpoint.last)) if on]
        name = _e(checkpoint.path.name)
        rows.append((
            str(rank) if checkpoint.score is not None else "",
            f'<span class="best">{name}</span>' if checkpoint.best else name,
            _fmt(checkpoint.score),
            ", ".join(marks),
            f"{checkpoint.size / 1e6:.2f} MB",
        ))
    intro = ""
    if run.monitor:
        intro = f"<p>Ranked by <code>{_e(monitor)}</code> ({'higher' if reverse else 'lower'} is better), as ModelCheckpoint kept them.</p>"
    return section + intro + _table(["rank", "file", monitor, "", "size"], rows, numeric=(0, 2, 4))
