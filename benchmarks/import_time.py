"""What importing fulmen costs on top of importing torch (and what importing Lightning costs).

    python benchmarks/import_time.py [--repeats 11] [--json out.json]

Each statement runs in a fresh interpreter (``python -c``), timed from outside (process
start to exit), in interleaved rounds; reported are medians and the median over rounds of
the difference to ``import torch`` of the same round. Then ``python -X importtime`` shows
which modules a statement imports beyond those of ``import torch``, with their self time.

Statements:
  import torch                                   the baseline every variant pays
  import fulmen                                  the package itself (its names load lazily)
  import torch, fulmen                           the target's definition: torch + fulmen
  from fulmen import Trainer, Module, Fabric     what a training script actually imports
  import lightning                               when installed
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STATEMENTS = {
    "import torch": "import torch",
    "import fulmen": "import fulmen",
    "import torch, fulmen": "import torch, fulmen",
    "from fulmen import Trainer, Module, Fabric": "from fulmen import Trainer, Module, Fabric",
    "import lightning": "import lightning",
}


def _has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def time_statement(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def _importtime_rows(code: str):
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True).stderr
    rows = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    return rows


def importtime(code: str, top: int = 12) -> Dict[str, object]:
    """``-X importtime`` of ``code``: the modules it imports that ``import torch`` does not,
    their summed self time and the top ones by self time (one run each, so rough)."""
    torch_names = {r[3] for r in _importtime_rows("import torch")}
    rows = _importtime_rows(code)
    added = [r for r in rows if r[3] not in torch_names]
    by_self = sorted(added, key=lambda r: r[0], reverse=True)[:top]
    return {
        "total_ms": sum(r[1] for r in rows if r[2] == 0) / 1000,
        "modules": len(rows),
        "added_modules": len(added),
        "added_self_ms": sum(r[0] for r in added) / 1000,
        "top_added_by_self_time": [{"module": r[3], "self_ms": r[0] / 1000} for r in by_self],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--json")
    args = p.parse_args(argv)

    statements = dict(STATEMENTS)
    if not _has("lightning"):
        print("lightning is not importable: skipping 'import lightning'")
        del statements["import lightning"]
    names = list(statements)
    for name in names:  # warm the file cache once, untimed
        time_statement(statements[name])
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(time_statement(statements[name]))
    base = times["import torch"]
    result = {"command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])), "statements": {}}
    print("| statement | median s | minus `import torch` (median of paired) |")
    print("|---|---:|---:|")
    for name in names:
        diffs = [t - b for t, b in zip(times[name], base)]
        entry = {"seconds": times[name], "median_s": statistics.median(times[name]), "minus_torch_s": statistics.median(diffs)}
        result["statements"][name] = entry
        print(f"| `{name}` | {entry['median_s']:.3f} | {entry['minus_torch_s']:+.3f} |")
    result["importtime"] = {}
    for name in [n for n in ("import torch, fulmen", "from fulmen import Trainer, Module, Fabric", "import lightning") if n in statements]:
        info = importtime(statements[name])
        result["importtime"][name] = info
        print(f"\n-X importtime, `{name}`: {info['added_modules']} modules beyond `import torch`'s, "
              f"{info['added_self_ms']:.0f} ms of self time; top: "
              + ", ".join(f"{r['module']} {r['self_ms']:.1f}" for r in info["top_added_by_self_time"]))
    from common import machine

    result["machine"] = machine()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
