"""The ``fulmen report`` subcommand, registered by fulmen's built-ins through the
``register_cli_commands`` hook. Import-light: the report itself is imported when it runs."""

from __future__ import annotations


def configure(parser) -> None:
    """Arguments of ``fulmen report``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a CSV logger run directory (its log_dir, with metrics.csv)")
    parser.add_argument("-o", "--output", default=None, help="folder for index.html and the PNGs (default RUN_DIR/report)")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help="where ModelCheckpoint wrote (default RUN_DIR/checkpoints)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Write the report; a bad run directory or a missing matplotlib is one line on stderr, status 2."""
    import sys

    from fulmen.errors import FulmenConfigError
    from fulmen.report import write_report

    try:
        index = write_report(args.run_dir, args.output, args.checkpoints)
    except FulmenConfigError as exc:
        print(f"fulmen report: {exc}", file=sys.stderr)
        return 2
    print(index)
    return 0
