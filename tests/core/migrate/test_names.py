"""The name table against the installed fulmen and the docs, so neither can rot."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fulmen.migrate import names
from fulmen.migrate.names import NoEquivalent, Target

DOC = Path(__file__).resolve().parents[3] / "docs" / "migrating-from-lightning.md"


def _resolves(target: Target) -> bool:
    try:
        return hasattr(importlib.import_module(target.module), target.name)
    except ImportError:
        return False


def test_every_target_imports_and_pending_ones_are_listed():
    targets = {key: value for key, value in names.NAMES.items() if isinstance(value, Target)}
    broken = sorted(key for key, target in targets.items() if not target.pending and not _resolves(target))
    assert not broken, f"table entries whose fulmen target does not import: {broken}"
    for target in targets.values():  # even a pending name's module must exist, or be on its way
        if not target.pending:
            importlib.import_module(target.module)


def test_pending_names_not_yet_in_fulmen():
    not_yet = sorted({t.dotted for t in names.NAMES.values() if isinstance(t, Target) and t.pending and not _resolves(t)})
    if not not_yet:
        pytest.skip("every pending name imports now")
    pytest.skip(f"not importable yet, so migrate reports them: {', '.join(not_yet)}")


def test_every_mapped_module_imports():
    for lightning, target in names.MODULES.items():
        if isinstance(target, str):
            importlib.import_module(target)
        else:
            assert isinstance(target, NoEquivalent) and target.advice, lightning


def test_every_entry_has_advice_or_a_target():
    for key, entry in names.NAMES.items():
        assert key.startswith(("lightning.pytorch.", "lightning.fabric.", "lightning.")), key
        if isinstance(entry, NoEquivalent):
            assert len(entry.advice) > 20, key
        if isinstance(entry, Target) and entry.pending:
            assert entry.advice, f"{key}: a pending name needs advice for until it lands"


@pytest.mark.parametrize("written, canonical", [
    ("pytorch_lightning.callbacks.ModelCheckpoint", "lightning.pytorch.callbacks.ModelCheckpoint"),
    ("lightning_fabric.Fabric", "lightning.fabric.Fabric"),
    ("lightning.Trainer", "lightning.Trainer"),
])
def test_standalone_packages_are_the_same_names(written, canonical):
    assert names.canonical(written) == canonical


def test_submodule_names_resolve_through_their_public_package():
    assert names.lookup("lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint") == \
        Target("fulmen.callbacks", "ModelCheckpoint")
    assert names.lookup("lightning.pytorch.core.module.LightningModule") == Target("fulmen", "Module")
    assert names.lookup("lightning.fabric.utilities.seed.seed_everything") == Target("fulmen", "seed_everything")
    assert isinstance(names.lookup("lightning.pytorch.tuner.tuning.Tuner"), NoEquivalent)
    assert names.lookup("lightning.pytorch.callbacks") == "fulmen.callbacks"
    assert names.lookup("lightning.pytorch.NoSuchThing") is None


def test_the_doc_lists_every_name_of_the_table():
    text = DOC.read_text()
    assert "## Running fulmen migrate" in text and "## Name table" in text
    missing = [key for key in names.NAMES if f"`{key}`" not in text]
    missing += [key for key in names.MODULES if f"`{key}`" not in text]
    assert not missing, f"docs/migrating-from-lightning.md lacks (regenerate with python -m fulmen.migrate.doc): {missing}"


def test_the_doc_name_table_is_the_generated_one():
    from fulmen.migrate.doc import name_table

    assert name_table() in DOC.read_text(), (
        "docs/migrating-from-lightning.md's name table is out of date: replace its '## Name table' "
        "section with the output of python -m fulmen.migrate.doc")
