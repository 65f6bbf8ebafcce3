"""A tabular classifier fed by a LightningDataModule that writes its data set to disk in
prepare_data and reads it in setup, with torchmetrics accuracy logged as Metric objects and
the backbone unfrozen by BackboneFinetuning (Lightning 2.x).

Exercises: ``import lightning as L`` with ``L.LightningDataModule``, prepare_data /
setup(stage) / *_dataloader, ``trainer.fit(model, dm)`` positionally,
``self.log("val_acc", self.val_acc)`` with torchmetrics, BackboneFinetuning (its learning
rate schedule), ModelCheckpoint(monitor="val_acc", mode="max"), EarlyStopping(mode="max"),
load_from_checkpoint, trainer.test(datamodule=...).

Run: python datamodule_torchmetrics.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import csv
import os
import sys
import tempfile

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import BackboneFinetuning, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

CLASSES = 3


class BlobsDataModule(L.LightningDataModule):
    def __init__(self, data_dir, batch_size=32):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.path = os.path.join(data_dir, "blobs.csv")
        self.stages_set_up = []

    def prepare_data(self):
        """Writes three Gaussian blobs to a CSV file (once, as a download would)."""
        if os.path.exists(self.path):
            return
        os.makedirs(self.data_dir, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
        labels = torch.randint(0, CLASSES, (600,), generator=g)
        points = centres[labels] + 0.6 * torch.randn(600, 2, generator=g)
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["x0", "x1", "label"])
            for (a, b), y in zip(points.tolist(), labels.tolist()):
                writer.writerow([a, b, y])

    def setup(self, stage):
        self.stages_set_up.append(stage)
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        x = torch.tensor([[float(r["x0"]), float(r["x1"])] for r in rows])
        y = torch.tensor([int(r["label"]) for r in rows])
        full = TensorDataset(x, y)
        self.train_set, self.val_set, self.test_set = random_split(full, [400, 100, 100], generator=torch.Generator().manual_seed(1))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)


class BlobClassifier(L.LightningModule):
    def __init__(self, hidden=16, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, CLASSES)
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.train_acc(logits, y)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=self.hparams.lr)


def main(out):
    L.seed_everything(23)
    dm = BlobsDataModule(os.path.join(out, "data"))
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    checkpoint = ModelCheckpoint(dirpath=os.path.join(out, "ckpt"), monitor="val_acc", mode="max")
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[finetuning, checkpoint, EarlyStopping(monitor="val_acc", mode="max", patience=5)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    model = BlobClassifier()
    trainer.fit(model, dm)

    assert os.path.isfile(dm.path), "prepare_data did not write the data set"
    assert dm.stages_set_up == ["fit"], dm.stages_set_up
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2, f"{len(groups)} param groups: the backbone was never added"
    # unfrozen at epoch 1 with 0.1 x the head's lr; the default lambda_func doubles it for epoch 2
    assert abs(groups[1]["lr"] - 0.01 * 0.1 * 2.0) < 1e-9, groups[1]["lr"]
    val_acc = float(trainer.callback_metrics["val_acc"])
    assert val_acc > 0.9, f"val_acc {val_acc:.3f}"
    assert 0.0 <= float(trainer.callback_metrics["train_acc_epoch"]) <= 1.0

    best = BlobClassifier.load_from_checkpoint(checkpoint.best_model_path)
    assert best.hparams.hidden == 16
    tested = trainer.test(best, datamodule=dm, verbose=False)
    assert dm.stages_set_up == ["fit", "test"], dm.stages_set_up
    test_acc = tested[0]["test_acc"]
    assert test_acc > 0.9, tested
    assert abs(float(checkpoint.best_model_score) - max(val_acc, float(checkpoint.best_model_score))) < 1e-6
    print(f"CORPUS_OK datamodule_torchmetrics: val_acc {val_acc:.3f}, test_acc {test_acc:.3f}, backbone lr {groups[1]['lr']:.2e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
