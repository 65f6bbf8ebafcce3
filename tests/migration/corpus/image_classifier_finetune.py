"""Finetuning an image classifier whose backbone was "pretrained" on another task, with a
BaseFinetuning callback that keeps the backbone frozen for one epoch and then unfreezes it
into its own optimizer parameter group (Lightning 2.x).

Exercises: ``from lightning.pytorch import ...``, BaseFinetuning (freeze_before_training,
finetune_function, freeze, unfreeze_and_add_param_group), configure_optimizers over the
trainable parameters only, limit_train_batches, accuracy read back after fit.

Run: python image_classifier_finetune.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_images(n, classes=4, seed=0):
    """8x8 one-channel images: class k lights up quadrant k, under noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        images[i, 0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 1.0
    return images, labels


def make_backbone():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )


def pretrain_backbone(path):
    """Stands in for downloading pretrained weights: a short plain-PyTorch run on a
    related task (which half of the image is bright), saved as a state dict."""
    backbone = make_backbone()
    head = nn.Linear(64, 2)
    images, labels = make_images(256, seed=123)
    targets = labels % 2
    opt = torch.optim.Adam(list(backbone.parameters()) + list(head.parameters()), lr=0.01)
    for _ in range(20):
        loss = nn.functional.cross_entropy(head(backbone(images)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(backbone.state_dict(), path)


class Classifier(LightningModule):
    def __init__(self, backbone_weights, classes=4, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = make_backbone()
        self.backbone.load_state_dict(torch.load(backbone_weights, weights_only=True))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.lr)


class UnfreezeBackboneAt(BaseFinetuning):
    def __init__(self, epoch=1):
        super().__init__()
        self.epoch = epoch
        self.groups_seen = []
        self.backbone_at_start = None

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone, train_bn=False)
        self.backbone_at_start = [p.detach().clone() for p in pl_module.backbone.parameters()]

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == self.epoch:
            self.unfreeze_and_add_param_group(modules=pl_module.backbone, optimizer=optimizer, lr=1e-3, train_bn=True)
        self.groups_seen.append(len(optimizer.param_groups))

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch - 1:
            unchanged = all(torch.equal(a, b) for a, b in zip(self.backbone_at_start, pl_module.backbone.parameters()))
            assert unchanged, "the frozen backbone changed during its frozen epochs"


def main(out):
    seed_everything(3)
    weights = os.path.join(out, "backbone.pt")
    os.makedirs(out, exist_ok=True)
    pretrain_backbone(weights)

    train = DataLoader(TensorDataset(*make_images(320, seed=1)), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(*make_images(128, seed=2)), batch_size=64)
    finetuning = UnfreezeBackboneAt(epoch=1)
    trainer = Trainer(
        max_epochs=3,
        limit_train_batches=8,
        accelerator="cpu",
        devices=1,
        callbacks=[finetuning],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    model = Classifier(weights)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=val)

    assert finetuning.groups_seen == [1, 2, 2], f"param groups per epoch: {finetuning.groups_seen}"
    assert all(p.requires_grad for p in model.backbone.parameters()), "backbone still frozen after epoch 1"
    moved = any(not torch.equal(a, b) for a, b in zip(finetuning.backbone_at_start, model.backbone.parameters()))
    assert moved, "the backbone never trained after it was unfrozen"
    acc = float(trainer.callback_metrics["val_acc"])
    assert acc > 0.8, f"val_acc {acc:.3f}"
    print(f"CORPUS_OK image_classifier_finetune: val_acc {acc:.3f}, param groups {finetuning.groups_seen}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
