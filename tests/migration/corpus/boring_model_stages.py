"""A BoringModel-style regression put through every Trainer stage: fast_dev_run, fit with
mid-epoch validation, validate, test from the best checkpoint, predict (Lightning 2.x).

Exercises: ``from lightning.pytorch import ...`` plus ``from lightning.pytorch.callbacks
import ModelCheckpoint``, Trainer(fast_dev_run, limit_train_batches, limit_val_batches,
val_check_interval, check_val_every_n_epoch, log_every_n_steps, gradient_clip_val,
accumulate_grad_batches, deterministic, default_root_dir), trainer.validate / test /
predict and what they return, ckpt_path="best", is_overridden, on_*_epoch_end hooks of
the module.

Run: python boring_model_stages.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torch.utils.data import DataLoader, Dataset


class RandomPairs(Dataset):
    def __init__(self, n, features=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        weights = torch.randn(features, 1, generator=torch.Generator().manual_seed(99))
        self.x = torch.randn(n, features, generator=g)
        self.y = self.x @ weights

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class BoringRegressor(LightningModule):
    def __init__(self, features=8, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(features, 1)
        self.validation_epochs = 0
        self.train_epochs = 0

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return {"loss": loss}

    def on_train_epoch_end(self):
        self.train_epochs += 1

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_validation_epoch_end(self):
        self.validation_epochs += 1

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        return self(x)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)]


def loaders():
    train = DataLoader(RandomPairs(256, seed=0), batch_size=16, shuffle=True)
    val = DataLoader(RandomPairs(64, seed=1), batch_size=16)
    test = DataLoader(RandomPairs(64, seed=2), batch_size=16)
    return train, val, test


def quiet(**kwargs):
    kwargs.update(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False)
    return Trainer(**kwargs)


def main(out):
    seed_everything(1, workers=True)
    train, val, test = loaders()
    assert is_overridden("predict_step", BoringRegressor(), LightningModule)
    assert not is_overridden("on_test_epoch_end", BoringRegressor(), LightningModule)

    smoke = BoringRegressor()
    smoke_trainer = quiet(fast_dev_run=2, default_root_dir=os.path.join(out, "smoke"))
    smoke_trainer.fit(smoke, train, val)
    assert smoke_trainer.global_step == 2, smoke_trainer.global_step
    assert not os.path.exists(os.path.join(out, "smoke", "lightning_logs")), "fast_dev_run must not log"

    checkpoint = ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), monitor="val_loss", save_top_k=2, save_last=True)
    trainer = quiet(
        max_epochs=4,
        limit_train_batches=12,
        limit_val_batches=2,
        val_check_interval=0.5,
        check_val_every_n_epoch=1,
        log_every_n_steps=3,
        gradient_clip_val=5.0,
        accumulate_grad_batches=2,
        deterministic=True,
        callbacks=[checkpoint],
        default_root_dir=out,
        logger=False,
    )
    model = BoringRegressor()
    with torch.no_grad():
        untrained = nn.functional.mse_loss(model(test.dataset.x), test.dataset.y).item()
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)
    assert trainer.global_step == 4 * 12 // 2, trainer.global_step
    assert model.train_epochs == 4, model.train_epochs
    assert model.validation_epochs == 1 + 4 * 2, model.validation_epochs  # sanity check + twice per epoch
    assert os.path.isfile(checkpoint.best_model_path) and os.path.isfile(checkpoint.last_model_path)
    assert len([f for f in os.listdir(checkpoint.dirpath) if f.endswith(".ckpt")]) == 3, os.listdir(checkpoint.dirpath)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert abs(lr - 0.1 * 0.9 ** 4) < 1e-9, lr

    validated = trainer.validate(model, dataloaders=val, verbose=False)
    assert isinstance(validated, list) and set(validated[0]) == {"val_loss"}, validated
    tested = trainer.test(model, dataloaders=test, ckpt_path="best", verbose=False)
    assert set(tested[0]) == {"test_loss"} and tested[0]["test_loss"] < 0.3 * untrained, (tested, untrained)
    assert trainer.ckpt_path == checkpoint.best_model_path, (trainer.ckpt_path, checkpoint.best_model_path)

    predictions = trainer.predict(model, dataloaders=test)
    assert len(predictions) == 4 and all(p.shape == (16, 1) for p in predictions), [p.shape for p in predictions]
    stacked = torch.cat(predictions)
    with torch.no_grad():
        expected = model(test.dataset.x)
    assert torch.allclose(stacked, expected, atol=1e-6), "predict did not use the model's current weights"
    print(f"CORPUS_OK boring_model_stages: val {validated[0]['val_loss']:.4f}, test {tested[0]['test_loss']:.4f}, {len(predictions)} prediction batches")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
