"""What a spawned rank reports about ``rank_zero_only``: in a module of its own because
``ddp_spawn`` workers import the function they run by module and name."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from fulmen.utilities import rank_zero_only, rank_zero_warn


@rank_zero_only
def _only_on_zero(value):
    return value * 2


def report_rank(fabric, out_dir: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_zero_warn("once per job")
    record = {
        "global_rank": fabric.global_rank,
        "rank_zero_only.rank": rank_zero_only.rank,
        "decorated": _only_on_zero(21),
        "warnings": [str(w.message) for w in caught],
    }
    (Path(out_dir) / f"rank_{fabric.global_rank}.json").write_text(json.dumps(record))
