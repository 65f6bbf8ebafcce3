"""A classifier that logs torchmetrics Metric objects and keeps what it predicted, so the
tests can compute the accuracy by hand over exactly the predictions the metric saw."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen

CLASSES = 4


def classification_data(n: int = 96, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    # labels partly learnable, partly noise: accuracies differ from batch to batch
    y = (x[:, :CLASSES].argmax(dim=1) + (torch.rand(n, generator=generator) < 0.4).long()) % CLASSES
    return TensorDataset(x, y)


def classification_loader(n: int = 96, batch_size: int = 16, seed: int = 0) -> DataLoader:
    return DataLoader(classification_data(n, seed), batch_size=batch_size, shuffle=False)


def hand_accuracy(pairs) -> float:
    """Correct over total for ``(preds, target)`` pairs."""
    correct = sum(int((p == t).sum()) for p, t in pairs)
    total = sum(len(t) for _, t in pairs)
    return correct / total


class Classifier(fulmen.Module):
    """Logs ``train_acc`` (a MulticlassAccuracy) from training_step and ``val_acc`` from
    validation_step; ``seen[stage][epoch]`` holds the (preds, target) of every batch."""

    def __init__(self, train_log: dict | None = None, use_update: bool = False) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy

        torch.manual_seed(0)
        self.net = nn.Linear(8, CLASSES)
        self.train_acc = MulticlassAccuracy(num_classes=CLASSES, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=CLASSES, average="micro")
        self.train_log = {"on_step": True, "on_epoch": True} if train_log is None else train_log
        self.use_update = use_update
        self.seen = defaultdict(lambda: defaultdict(list))
        self.forward_values = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        preds = logits.argmax(dim=1)
        self.seen["train"][self.current_epoch].append((preds.detach().clone(), y.clone()))
        if self.use_update:
            self.train_acc.update(preds, y)
        else:
            self.forward_values.append(float(self.train_acc(preds, y)))
        self.log("train_acc", self.train_acc, **self.train_log)
        return nn.functional.cross_entropy(logits, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        preds = self(x).argmax(dim=1)
        stage = "sanity" if self.trainer.sanity_checking else "val"
        self.seen[stage][self.current_epoch].append((preds.clone(), y.clone()))
        self.val_acc(preds, y)
        self.log("val_acc", self.val_acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class EpochValues(fulmen.Callback):
    """Records the epoch-end values callbacks see, per epoch."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.values = {}

    def on_train_epoch_end(self, trainer):
        self.values[trainer.current_epoch] = float(trainer.callback_metrics[self.key])
