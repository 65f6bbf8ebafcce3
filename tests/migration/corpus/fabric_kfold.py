"""K-fold cross-validation of a small classifier in a Fabric loop: one fresh model per
fold, the folds' accuracies averaged at the end (Lightning 2.x).

Exercises: ``import lightning as L`` with ``L.Fabric`` and ``L.seed_everything``,
fabric.setup with several models in one process, fabric.setup_dataloaders over
torch Subsets, fabric.barrier, fabric.all_reduce, fabric.print,
fabric.is_global_zero, CSVLogger from lightning.fabric.loggers read back.

Run: python fabric_kfold.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import csv
import glob
import os
import sys
import tempfile

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

FOLDS = 4


def two_moons_like(n, seed=0):
    """Two interleaved half circles, made without scikit-learn."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * torch.pi
    labels = torch.randint(0, 2, (n,), generator=g)
    x = torch.where(labels == 0, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(labels == 0, torch.sin(t), 0.5 - torch.sin(t))
    points = torch.stack([x, y], dim=1) + 0.1 * torch.randn(n, 2, generator=g)
    return TensorDataset(points, labels)


def fold_indices(n, folds, seed=0):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    size = n // folds
    for k in range(folds):
        val = order[k * size:(k + 1) * size]
        train = order[:k * size] + order[(k + 1) * size:]
        yield train, val


def train_fold(fabric, dataset, train_idx, val_idx, fold):
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model, optimizer = fabric.setup(model, optimizer)
    train_loader, val_loader = fabric.setup_dataloaders(
        DataLoader(Subset(dataset, train_idx), batch_size=32, shuffle=True),
        DataLoader(Subset(dataset, val_idx), batch_size=64),
    )
    for epoch in range(15):
        for x, y in train_loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
        fabric.log_dict({f"fold{fold}_loss": loss.item()}, step=epoch)

    model.eval()
    correct = torch.tensor(0.0)
    seen = torch.tensor(0.0)
    with torch.no_grad():
        for x, y in val_loader:
            correct += (model(x).argmax(-1) == y).sum()
            seen += y.numel()
    correct = fabric.all_reduce(correct, reduce_op="sum")
    seen = fabric.all_reduce(seen, reduce_op="sum")
    return float(correct / seen)


def main(out):
    L.seed_everything(13)
    logger = CSVLogger(root_dir=out, name="kfold")
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=[logger])
    fabric.launch()

    dataset = two_moons_like(400)
    accuracies = []
    for fold, (train_idx, val_idx) in enumerate(fold_indices(len(dataset), FOLDS)):
        assert not set(train_idx) & set(val_idx)
        accuracy = train_fold(fabric, dataset, train_idx, val_idx, fold)
        fabric.print(f"fold {fold}: accuracy {accuracy:.3f}")
        accuracies.append(accuracy)
        fabric.barrier()
    mean = sum(accuracies) / FOLDS
    fabric.log("cv_accuracy", mean, step=0)
    logger.finalize("success")

    assert len(accuracies) == FOLDS
    assert mean > 0.9, f"cross-validated accuracy {mean:.3f}: {accuracies}"
    if fabric.is_global_zero:
        files = glob.glob(os.path.join(out, "kfold", "**", "metrics.csv"), recursive=True)
        assert files, f"no metrics.csv under {out}/kfold"
        with open(files[0], newline="") as f:
            rows = list(csv.DictReader(f))
        columns = set(rows[0])
        assert {"fold0_loss", f"fold{FOLDS - 1}_loss", "cv_accuracy"} <= columns, sorted(columns)
        logged = [float(r["cv_accuracy"]) for r in rows if r.get("cv_accuracy")]
        assert logged and abs(logged[-1] - mean) < 1e-6, (logged, mean)
    fabric.print(f"CORPUS_OK fabric_kfold: mean accuracy {mean:.3f} over {FOLDS} folds")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
