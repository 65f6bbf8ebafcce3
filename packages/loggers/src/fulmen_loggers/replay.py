"""``fulmen loggers replay PATH``: deliver what a finished (or dead) run left in its spool.

Every run directory of these loggers holds ``fulmen-delivery/meta.json`` (which backend,
its settings, the run id once known) next to the spool. Replay rebuilds the client from
that, continues the same backend run, sends the spooled records in order, acknowledges
them as it goes (so an interrupted replay can simply be started again) and reports what is
left. MLflow replays first ask the server which steps arrived, so records whose delivery
was in doubt are not sent twice. A directory whose training process is still alive is
skipped: that process delivers its own spool.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Union

from fulmen_loggers._delivery import Dispatcher
from fulmen_loggers._dir_lock import try_lock, unlock
from fulmen_loggers._records import DELIVERY_DIR, META_FILE, read_json
from fulmen_loggers._sink import DeliveryOptions


@dataclass
class ReplayResult:
    """What replaying one run directory did: one line of the command's report, or one ``--json`` entry."""
    run_dir: str
    backend: str
    status: str  # "delivered", "nothing to send", "incomplete", "busy", "unreadable"
    delivered: int = 0
    remaining: int = 0
    rejected: int = 0
    error: str = ""
    spool: str = ""


def find_delivery_dirs(path: Union[str, Path]) -> List[Path]:
    """The ``fulmen-delivery`` folders at or below ``path`` (a run directory, the delivery
    folder itself, or any folder above run directories)."""
    path = Path(path)
    if path.name == DELIVERY_DIR and (path / META_FILE).is_file():
        return [path]
    if (path / DELIVERY_DIR / META_FILE).is_file():
        return [path / DELIVERY_DIR]
    return sorted(p.parent for p in path.rglob(f"{DELIVERY_DIR}/{META_FILE}"))


def replay_dir(directory: Path, timeout: float = 60.0, retry_max: float = 5.0) -> ReplayResult:
    """Replay one delivery directory unless a live process holds its lock: rebuild the sink from
    ``meta.json``, drain the spool for up to ``timeout`` seconds (retries back off to ``retry_max`` seconds
    apart), and say what is left."""
    meta = read_json(directory / META_FILE, None)
    run_dir = str(directory.parent)
    if not isinstance(meta, dict) or not meta.get("sink"):
        return ReplayResult(run_dir, "?", "unreadable", error=f"{directory / META_FILE} is missing or damaged")
    label = meta.get("label") or meta.get("backend") or "backend"
    fd = try_lock(directory, wait=min(timeout, 5.0))
    if fd is None:
        return ReplayResult(run_dir, label, "busy", error="a live process is delivering this run's records")
    try:
        options = DeliveryOptions(retry_initial=0.5, retry_max=retry_max)
        dispatcher = Dispatcher.for_replay(directory, meta, options)
        delivered, remaining = dispatcher.replay(timeout)
        status = (
            "nothing to send" if not delivered and not remaining else ("delivered" if not remaining else "incomplete")
        )
        return ReplayResult(
            run_dir,
            label,
            status,
            delivered,
            remaining,
            dispatcher.stats["rejected"],
            dispatcher.last_error if remaining else "",
            str(dispatcher.spool.path),
        )
    finally:
        unlock(fd)


def replay(path: Union[str, Path], timeout: float = 60.0) -> List[ReplayResult]:
    """Replay every run under ``path``; each gets up to ``timeout`` seconds."""
    return [replay_dir(directory, timeout) for directory in find_delivery_dirs(path)]


# ---------------------------------------------------------------------------------- CLI


def configure_cli(parser) -> None:
    """Build ``fulmen loggers``' subcommands on ``parser`` (the ``fulmen`` command calls this)."""
    sub = parser.add_subparsers(dest="loggers_command", metavar="COMMAND")
    cmd = sub.add_parser(
        "replay",
        help="send the records a run could not deliver (its spool) to its tracker",
        description="Send the records that runs under PATH spooled while their tracker was "
        "unreachable, in order, continuing the same backend runs.",
    )
    cmd.add_argument("path", help="a run directory, or any folder above run directories")
    cmd.add_argument("--timeout", type=float, default=60.0, help="seconds to keep retrying per run (default 60)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.set_defaults(func=_cmd_replay)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _cmd_replay(args) -> int:
    # Backend libraries print to stdout (MLflow's "View run at ..."): keep it for the report.
    with contextlib.redirect_stdout(sys.stderr):
        results = replay(args.path, timeout=args.timeout)
    if args.json:
        json.dump([asdict(r) for r in results], sys.stdout, indent=2)
        print()
    elif not results:
        print(f"no fulmen logger runs under {args.path}")
    for r in results if not args.json else ():
        if r.status in ("delivered", "nothing to send"):
            line = f"{r.run_dir}: {r.backend}: delivered {r.delivered} record(s), none left"
        elif r.status == "busy":
            line = f"{r.run_dir}: {r.backend}: skipped, {r.error}"
        elif r.status == "unreadable":
            line = f"{r.run_dir}: {r.error}"
        else:
            line = (
                f"{r.run_dir}: {r.backend}: delivered {r.delivered} record(s); {r.remaining} still spooled in "
                f"{r.spool} ({r.error})"
            )
        if r.rejected:
            line += f"; {r.rejected} refused by the backend (see rejected.jsonl)"
        print(line)
    return 0 if all(r.status in ("delivered", "nothing to send") for r in results) else 1
