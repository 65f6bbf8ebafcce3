"""``fulmen migrate PATH... [--diff] [--check] [--strict]``.

Exit status (so CI can gate on it):

* 0: every file was read and parsed; names fulmen has no equivalent for are reported on
  standard error but do not fail the run (the program may still run with Lightning
  installed beside fulmen).
* 1: ``--check`` and some file would change; ``--strict`` and the report is not empty; or a
  file could not be read or parsed (named on standard error, the others are still migrated).
* 2: bad usage: a path that does not exist, or libcst is not installed.

The unified diff (``--diff``) goes to standard output, the report to standard error, one
line per name: ``path:line:col: lightning.name — what to do instead``. Written files get
positions in the rewritten text; ``--diff`` and ``--check`` report positions in the file as
it is.
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List

INSTALL_HINT = 'fulmen migrate needs libcst: pip install "fulmen[migrate]"'
# Folders that hold someone else's code or generated files, never the program to migrate.
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "build", "dist"}


def configure(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="Python files or folders (searched recursively for *.py)")
    parser.add_argument("--diff", action="store_true", help="print a unified diff and write nothing")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any file would change")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if any Lightning name could not be mapped")
    parser.set_defaults(func=run)


def python_files(paths: List[str]) -> Iterator[Path]:
    """Each ``.py`` file named or under a named folder, in a stable order; hidden folders,
    virtual environments and caches are skipped."""
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                             and not (Path(root) / d / "pyvenv.cfg").exists())
            for name in sorted(files):
                if name.endswith(".py"):
                    yield Path(root) / name


def _write(path: Path, text: str, encoding: str) -> None:
    """Replace the file in one rename, keeping its permissions: an interrupted run never
    leaves half a program behind."""
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".migrate")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: Path):
    import tokenize

    with open(path, "rb") as handle:
        encoding, _ = tokenize.detect_encoding(handle.readline)
    with open(path, encoding=encoding, newline="") as handle:
        return handle.read(), encoding


def run(args) -> int:
    try:
        import libcst
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    from fulmen.migrate.rewriter import migrate_source

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"fulmen migrate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    write = not (args.diff or args.check)
    failed = changed = reported = 0
    for path in python_files(args.paths):
        try:
            source, encoding = _read(path)
            result = migrate_source(source)
        except (OSError, UnicodeDecodeError, libcst.ParserSyntaxError) as exc:
            print(f"{path}: cannot migrate: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
            failed += 1
            continue
        findings = result.findings
        if result.changed:
            changed += 1
            if args.diff:
                sys.stdout.writelines(difflib.unified_diff(
                    source.splitlines(keepends=True), result.code.splitlines(keepends=True),
                    fromfile=str(path), tofile=f"{path} (migrated)"))
            if write:
                _write(path, result.code, encoding)
                findings = result.findings_after()
        for finding in findings:
            print(finding.format(str(path)), file=sys.stderr)
        reported += len(findings)
    verb = "rewritten" if write else "would change"
    print(f"fulmen migrate: {changed} file(s) {verb}, {reported} name(s) need a human"
          + (f", {failed} file(s) could not be read" if failed else ""), file=sys.stderr)
    if failed or (args.check and changed) or (args.strict and reported):
        return 1
    return 0
