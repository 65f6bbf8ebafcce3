"""The Lightning corpus: programs written against Lightning 2.x's public API (each one passes
under real Lightning; see corpus/README.md) must run under fulmen after ``fulmen migrate``.

Each program is copied, migrated with the real command in a subprocess, checked to import
no Lightning package any more, and run with ``python`` on the CPU; it must exit 0 and print
its ``CORPUS_OK <name>`` line, which it prints only after its own assertions (loss fell,
checkpoint exists and loads, metrics file has the columns, ...) have passed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("libcst", reason='fulmen migrate needs libcst (pip install "fulmen[migrate]")')

CORPUS = Path(__file__).parent / "corpus"
PROGRAMS = sorted(p.stem for p in CORPUS.glob("*.py"))
LIGHTNING_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric")
# Optional libraries a program uses itself (not fulmen's dependencies): without them the
# program cannot run here at all, so its test is skipped rather than failed.
NEEDS = {
    "datamodule_torchmetrics": ["torchmetrics"],
    "fabric_image_classifier": ["tensorboard"],
}
PROGRAM_TIMEOUT_S = 180


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


def migrate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fulmen", "migrate", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120)


def lightning_imports(source: str) -> list:
    """(line, module) for every import of a Lightning package left in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split(".")[0] in LIGHTNING_PACKAGES]
    return found


def tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def test_the_corpus_is_complete():
    """The issue's patterns, one program each at least (a deleted file must not go unnoticed)."""
    assert set(PROGRAMS) >= {
        "autoencoder", "image_classifier_finetune", "gan_manual_optimization", "rl_iterable_dataset",
        "fabric_image_classifier", "fabric_kfold", "fabric_dcgan", "fabric_language_model",
        "boring_model_stages", "datamodule_torchmetrics", "profiler_and_schedulers",
    }
    for name in PROGRAMS:
        assert lightning_imports((CORPUS / f"{name}.py").read_text()), f"{name}.py imports no Lightning package"


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_runs_under_fulmen_after_migrate(name, tmp_path):
    for module in NEEDS.get(name, []):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name}.py uses {module}, which is not installed")
    program = tmp_path / f"{name}.py"
    shutil.copyfile(CORPUS / program.name, program)

    migrated = migrate(program.name, cwd=tmp_path)
    report = f"fulmen migrate said:\n{migrated.stdout}{migrated.stderr}"
    assert migrated.returncode == 0, report
    source = program.read_text()
    assert source != (CORPUS / program.name).read_text(), f"migrate changed nothing\n{report}"
    assert not lightning_imports(source), f"Lightning imports left: {lightning_imports(source)}\n{report}"

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, program.name, str(out)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=PROGRAM_TIMEOUT_S)
    output = tail(run.stdout + run.stderr)
    assert run.returncode == 0, f"{name}.py exited {run.returncode} under fulmen\n{report}\n--- program output ---\n{output}"
    assert f"CORPUS_OK {name}:" in run.stdout, f"{name}.py never printed its success line\n{output}"


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.py"))}


def test_migrate_leaves_the_corpus_alone_and_is_idempotent(tmp_path):
    """--diff writes nothing; migrating a copy leaves the original untouched; a second run
    changes nothing and --check then agrees."""
    originals = _digests(CORPUS)
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy, ignore=shutil.ignore_patterns("__pycache__"))

    shown = migrate("--diff", ".", cwd=copy)
    assert shown.returncode == 0, shown.stderr
    assert _digests(copy) == originals, "--diff wrote to the files"
    for name in PROGRAMS:
        assert f"{name}.py" in shown.stdout, f"--diff shows no change for {name}.py"

    first = migrate(".", cwd=copy)
    assert first.returncode == 0, first.stdout + first.stderr
    once = {p.name: p.read_text() for p in copy.glob("*.py")}
    assert all(once[n] != (CORPUS / n).read_text() for n in once), "some program was not rewritten"

    second = migrate(".", cwd=copy)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {p.name: p.read_text() for p in copy.glob("*.py")} == once, "a second migrate changed the text"
    check = migrate("--check", ".", cwd=copy)
    assert check.returncode == 0, f"--check says a migrated file would still change:\n{check.stdout}{check.stderr}"

    assert _digests(CORPUS) == originals, "the corpus itself was modified"
