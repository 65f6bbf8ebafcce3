"""``ModelSummary``: a table of submodules and parameter counts when fit starts."""

from __future__ import annotations

from typing import List, Tuple

from torch import nn

from fulmen.callbacks.base import Callback


def _count(module: nn.Module) -> Tuple[int, int]:
    total = trainable = 0
    seen = set()
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def _human(n: float) -> str:
    for unit in ("", "K", "M", "B", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}" if unit == "" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} P"


def summarize(module: nn.Module, max_depth: int = 1) -> str:
    """A text table of ``module``'s submodules down to ``max_depth`` levels (name, type,
    parameters, train/eval mode) with trainable, frozen and total parameter counts and size."""
    rows: List[Tuple[str, str, str, str]] = []
    for name, child in module.named_modules():
        if not name or name.count(".") >= max_depth:
            continue
        total, _ = _count(child)
        rows.append((name, type(child).__name__, _human(total), "train" if child.training else "eval"))
    total, trainable = _count(module)
    header = ("Name", "Type", "Params", "Mode")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(4)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [line(header), "-" * (sum(widths) + 6)] + [line(r) for r in rows]
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    out += [
        "-" * (sum(widths) + 6),
        f"{_human(trainable)} trainable params",
        f"{_human(total - trainable)} non-trainable params",
        f"{_human(total)} total params",
        f"{size_mb:.3f} MB total parameter size",
    ]
    return "\n".join(out)


class ModelSummary(Callback):
    """Print a table of the model's submodules and parameter counts when fit starts (on rank
    zero). The Trainer adds one unless ``enable_model_summary=False``; pass your own to change
    ``max_depth`` (``0`` prints nothing)."""

    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer, module) -> None:
        """Print the summary once, on global rank zero."""
        if trainer.is_global_zero and self.max_depth != 0:
            print(summarize(module, self.max_depth))
