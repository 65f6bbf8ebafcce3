"""``trainer.ckpt_path``: Lightning's record of which checkpoint a stage loaded, with
"best"/"last" resolved to the file, and None when the stage started without one."""

from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks import ModelCheckpoint


def test_ckpt_path_names_the_file_each_stage_loaded(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_last=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, callbacks=[checkpoint])
    model = BoringModule()
    assert trainer.ckpt_path is None
    trainer.fit(model, loader(), loader(seed=1))
    assert trainer.ckpt_path is None  # fit started fresh

    trainer.test(model, dataloaders=loader(seed=2), ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == checkpoint.best_model_path

    trainer.validate(model, dataloaders=loader(seed=2), verbose=False)
    assert trainer.ckpt_path is None  # no checkpoint asked for this time

    resumed = quiet_trainer(tmp_path, max_epochs=3, logger=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    resumed.fit(BoringModule(), loader(), ckpt_path=checkpoint.last_model_path)
    assert resumed.ckpt_path == checkpoint.last_model_path
    assert resumed.current_epoch == 3
