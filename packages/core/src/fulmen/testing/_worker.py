"""``python -m fulmen.testing._worker``: one multi-process strategy check, run by
``fulmen.testing.strategy.run_strategy``. The strategy's own launcher starts the other
ranks from here (re-running this command, spawning or forking), as it would for a user."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Run one multi-process strategy check with the arguments of ``run_strategy``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fulmen.testing._worker")
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import fulmen
    from fulmen.testing.strategy import _launched, _make

    fabric = fulmen.Fabric(accelerator=args.accelerator, strategy=_make(args.strategy), devices=args.devices,
                           precision=args.precision)
    # ``_launched`` lives in an importable module: spawned ranks unpickle it by name.
    fabric.launch(_launched, args.out, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
