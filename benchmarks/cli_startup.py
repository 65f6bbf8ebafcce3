"""How long ``--help`` takes: ``fulmen fit --help`` against a LightningCLI script's ``fit --help``.

    python benchmarks/cli_startup.py [--repeats 9] [--lightning-python .venv-lightning/bin/python] [--json out.json]

Each command runs in a fresh process, timed from outside (start to exit), in interleaved
rounds; reported are medians and the median of the per-round ratio to LightningCLI. Variants:

  fulmen fit --help                 the script-free command (any Module by class_path)
  fulmen script: CLI(Model) fit     a user's script with fulmen.cli.CLI and one Module class
  Lightning script: LightningCLI(Model) fit --help    the same script under Lightning
  import torch                      the floor both pay (each interpreter's own torch)

The Lightning side runs with the interpreter of a venv that has Lightning and jsonargparse
(``--lightning-python``); it is skipped when that interpreter is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]

FULMEN_SCRIPT = '''
import torch
import fulmen
from fulmen.cli import CLI

class Model(fulmen.Module):
    def __init__(self, hidden: int = 32, lr: float = 0.1):
        super().__init__()
        self.net = torch.nn.Linear(hidden, 1)

if __name__ == "__main__":
    CLI(Model)
'''

LIGHTNING_SCRIPT = FULMEN_SCRIPT.replace("import fulmen\nfrom fulmen.cli import CLI", "import lightning.pytorch as pl\nfrom lightning.pytorch.cli import LightningCLI").replace(
    "fulmen.Module", "pl.LightningModule").replace("CLI(Model)", "LightningCLI(Model)")


def timed(cmd: List[str], cwd: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--lightning-python", default=str(ROOT / ".venv-lightning" / "bin" / "python"))
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="cli_startup_")
    Path(work, "fulmen_script.py").write_text(FULMEN_SCRIPT)
    Path(work, "lightning_script.py").write_text(LIGHTNING_SCRIPT)
    commands: Dict[str, List[str]] = {
        "import torch (fulmen venv)": [sys.executable, "-c", "import torch"],
        "fulmen fit --help": [sys.executable, "-m", "fulmen", "fit", "--help"],
        "fulmen script: CLI(Model) fit --help": [sys.executable, "fulmen_script.py", "fit", "--help"],
    }
    if Path(args.lightning_python).exists():
        commands["import torch (Lightning venv)"] = [args.lightning_python, "-c", "import torch"]
        commands["Lightning script: LightningCLI(Model) fit --help"] = [args.lightning_python, "lightning_script.py", "fit", "--help"]
    for cmd in commands.values():  # warm the file cache once, untimed
        timed(cmd, work)
    times: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, work))
    reference = "Lightning script: LightningCLI(Model) fit --help"
    print(f"{'command':<52} {'median s':>9} {'ratio to LightningCLI':>22}")
    for name, values in times.items():
        ratio = ""
        if reference in times:
            ratio = f"{statistics.median(a / b for a, b in zip(values, times[reference])):.2f}"
        print(f"{name:<52} {statistics.median(values):>9.3f} {ratio:>22}")
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=2))


if __name__ == "__main__":
    main()
