"""The transformer on source strings: each import form, renames, unmapped names, formatting
and idempotence. Each expected text is what a Lightning user would write by hand."""

from __future__ import annotations

import textwrap

import pytest

from fulmen.migrate.rewriter import migrate_source


def migrate(code: str):
    result = migrate_source(textwrap.dedent(code))
    again = migrate_source(result.code)
    assert again.code == result.code, "a second run changed the code again"
    assert [f.name for f in again.findings] == [f.name for f in result.findings]
    return result


def code_of(code: str) -> str:
    return migrate(code).code


def test_import_lightning_as_L_keeps_the_alias_and_rewrites_chains():
    out = code_of("""\
        import lightning as L
        trainer = L.Trainer(max_epochs=1, callbacks=[L.pytorch.callbacks.ModelCheckpoint(monitor="loss")])
        class Net(L.LightningModule):
            pass
        L.seed_everything(0)
        fabric = L.fabric.Fabric(accelerator="cpu")
        """)
    assert out == textwrap.dedent("""\
        import fulmen as L, fulmen.callbacks
        trainer = L.Trainer(max_epochs=1, callbacks=[L.callbacks.ModelCheckpoint(monitor="loss")])
        class Net(L.Module):
            pass
        L.seed_everything(0)
        fabric = L.Fabric(accelerator="cpu")
        """)


@pytest.mark.parametrize("module", ["lightning.pytorch", "pytorch_lightning"])
def test_pl_alias_with_callbacks_loggers_annotations_and_isinstance(module):
    out = code_of(f"""\
        import {module} as pl
        def build(model: pl.LightningModule) -> pl.Trainer:
            assert isinstance(model, pl.LightningModule)
            return pl.Trainer(callbacks=[pl.callbacks.EarlyStopping("loss")],
                              logger=pl.loggers.TensorBoardLogger("logs"))
        """)
    assert out == textwrap.dedent("""\
        import fulmen as pl, fulmen.callbacks, fulmen_loggers
        def build(model: pl.Module) -> pl.Trainer:
            assert isinstance(model, pl.Module)
            return pl.Trainer(callbacks=[pl.callbacks.EarlyStopping("loss")],
                              logger=fulmen_loggers.TensorBoardLogger("logs"))
        """)


def test_from_imports_with_aliases_and_renames():
    out = code_of("""\
        from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar as Bar, TQDMProgressBar
        from lightning import Fabric, LightningModule
        from lightning.fabric.strategies import FSDPStrategy
        from lightning.pytorch.loggers import TensorBoardLogger, MLFlowLogger
        from pytorch_lightning.utilities.exceptions import MisconfigurationException

        class Net(LightningModule):
            def fail(self):
                raise MisconfigurationException("bad")
        bars = [Bar(), TQDMProgressBar()]
        """)
    assert out == textwrap.dedent("""\
        from fulmen.callbacks import ModelCheckpoint, ProgressBar as Bar, ProgressBar
        from fulmen import Fabric, Module
        from fulmen_fsdp import FSDPStrategy
        from fulmen_loggers import TensorBoardLogger, MLflowLogger
        from fulmen.errors import FulmenConfigError

        class Net(Module):
            def fail(self):
                raise FulmenConfigError("bad")
        bars = [Bar(), ProgressBar()]
        """)


def test_a_rename_that_would_collide_keeps_the_lightning_name_as_alias():
    out = code_of("""\
        from torch.nn import Module
        from lightning.pytorch import LightningModule
        class Net(LightningModule):
            head: Module
        """)
    assert "from fulmen import Module as LightningModule\n" in out
    assert "class Net(LightningModule):" in out


def test_a_name_mentioned_in_a_string_annotation_or_all_is_not_renamed():
    out = code_of("""\
        from lightning.pytorch import LightningModule
        __all__ = ["LightningModule"]
        def f(m: "LightningModule"): ...
        """)
    assert out.startswith("from fulmen import Module as LightningModule\n")
    assert '"LightningModule"' in out  # strings are never touched


def test_module_aliases_bound_by_from_and_dotted_imports():
    out = code_of("""\
        import lightning.pytorch.callbacks as cb
        from lightning import pytorch as pl
        from lightning.pytorch import loggers
        c = [cb.ModelCheckpoint(), cb.TQDMProgressBar()]
        t = pl.Trainer(logger=loggers.CSVLogger("logs"))
        """)
    assert out == textwrap.dedent("""\
        import fulmen.callbacks as cb
        import fulmen as pl
        from fulmen import loggers
        c = [cb.ModelCheckpoint(), cb.ProgressBar()]
        t = pl.Trainer(logger=loggers.CSVLogger("logs"))
        """)


def test_unaliased_imports_get_full_fulmen_paths():
    out = code_of("""\
        import pytorch_lightning
        import lightning.pytorch
        t = pytorch_lightning.Trainer()
        cb = lightning.pytorch.callbacks.ModelCheckpoint()
        """)
    assert out == textwrap.dedent("""\
        import fulmen
        import fulmen.callbacks
        t = fulmen.Trainer()
        cb = fulmen.callbacks.ModelCheckpoint()
        """)


def test_submodule_paths_and_attributes_past_a_mapped_name():
    out = code_of("""\
        from lightning.pytorch.callbacks.model_checkpoint import ModelCheckpoint
        from lightning.pytorch.core.module import LightningModule
        from lightning.fabric.utilities.seed import seed_everything
        name = ModelCheckpoint.CHECKPOINT_NAME_LAST
        """)
    assert out == textwrap.dedent("""\
        from fulmen.callbacks import ModelCheckpoint
        from fulmen import Module
        from fulmen import seed_everything
        name = ModelCheckpoint.CHECKPOINT_NAME_LAST
        """)


def test_unmapped_names_are_reported_at_their_lines_and_keep_their_lightning_import():
    result = migrate("""\
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
        from lightning.pytorch.tuner import Tuner

        trainer = L.Trainer()
        tuner = Tuner(trainer)
        finder = L.pytorch.tuner.Tuner(trainer)
        bar = RichProgressBar()
        """)
    assert result.code == textwrap.dedent("""\
        import fulmen as L, lightning
        from fulmen.callbacks import ModelCheckpoint; from lightning.pytorch.callbacks import RichProgressBar
        from lightning.pytorch.tuner import Tuner

        trainer = L.Trainer()
        tuner = Tuner(trainer)
        finder = lightning.pytorch.tuner.Tuner(trainer)
        bar = RichProgressBar()
        """)
    where = [(f.line, f.column, f.name) for f in result.findings]
    assert where == [
        (2, 58, "lightning.pytorch.callbacks.RichProgressBar"),
        (3, 37, "lightning.pytorch.tuner.Tuner"),
        (6, 9, "lightning.pytorch.tuner.Tuner"),
        (7, 10, "lightning.pytorch.tuner.Tuner"),
        (8, 7, "lightning.pytorch.callbacks.RichProgressBar"),
    ]
    assert all("tuner" in f.advice for f in result.findings if "Tuner" in f.name)
    assert "ProgressBar" in result.findings[0].advice


def test_unknown_lightning_names_are_reported_not_guessed():
    result = migrate("""\
        import lightning.pytorch as pl
        x = pl.callbacks.NotARealCallback()
        """)
    assert result.findings[0].name == "lightning.pytorch.callbacks.NotARealCallback"
    assert "name table" in result.findings[0].advice
    assert "lightning.pytorch.callbacks.NotARealCallback()" in result.code


def test_pending_names_map_only_once_fulmen_has_them():
    from fulmen.migrate.rewriter import _importable

    result = migrate("from lightning.pytorch.cli import LightningCLI\nLightningCLI(object)\n")
    if _importable("fulmen.cli", "CLI"):
        assert result.code.startswith("from fulmen.cli import CLI\n") and not result.findings
    else:
        assert result.code.startswith("from lightning.pytorch.cli import LightningCLI\n")
        assert [f.line for f in result.findings] == [1, 2]
        assert "not in this fulmen yet" in result.findings[0].advice


def test_comments_spacing_and_other_code_survive_and_only_lightning_lines_change():
    source = textwrap.dedent("""\
        #!/usr/bin/env python
        # -*- coding: utf-8 -*-
        \"\"\"Docstring mentioning lightning.pytorch.Trainer stays.\"\"\"
        import os   ,  sys  # odd spacing
        from lightning.pytorch.callbacks import (  # the callbacks
            ModelCheckpoint,   # best model
            EarlyStopping  ,
        )
        import lightning as L # framework


        def main( argv ) :
            # build the trainer
            t = L.Trainer( max_epochs = 1 )   # one epoch
            s = "L.Trainer"  ;  u = 'lightning.pytorch'
            return  [ModelCheckpoint(), EarlyStopping("x")]
        """)
    result = migrate_source(source)
    before, after = source.splitlines(), result.code.splitlines()
    assert len(before) == len(after)
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed == [5, 9]
    assert after[4] == "from fulmen.callbacks import (  # the callbacks"
    assert after[8] == "import fulmen as L # framework"
    assert after[5:7] == before[5:7]


def test_a_file_without_lightning_is_returned_unchanged():
    source = "import torch  # nothing here\nx = 'lightning.Trainer'\n"
    result = migrate_source(source)
    assert result.code == source and not result.changed and not result.findings


def test_star_imports_are_rewritten_and_reported():
    result = migrate_source("from lightning.pytorch.callbacks import *\n")
    assert result.code == "from fulmen.callbacks import *\n"
    assert result.findings[0].name == "lightning.pytorch.callbacks.*"


def test_imports_inside_functions_and_shadowing_locals():
    out = code_of("""\
        def train(L=None):
            import lightning as pl
            return pl.Trainer(), L.Trainer
        """)
    assert out == textwrap.dedent("""\
        def train(L=None):
            import fulmen as pl
            return pl.Trainer(), L.Trainer
        """)
