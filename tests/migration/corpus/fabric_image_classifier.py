"""An image classifier trained in a hand-written loop with Lightning Fabric.

Exercises: ``from lightning.fabric import Fabric``, TensorBoardLogger(root_dir=..., name=...)
from lightning.fabric.loggers, fabric.launch, fabric.rank_zero_first around dataset
preparation, fabric.setup / setup_dataloaders, fabric.backward, fabric.clip_gradients,
fabric.print, fabric.log_dict, fabric.save / fabric.load (a resume that continues exactly),
fabric.seed_everything.

Run: python fabric_image_classifier.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import glob
import os
import sys
import tempfile

import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def prepare_dataset(path, n=384, seed=0):
    """Writes the data set once (rank zero first, so other ranks would find the file)."""
    if not os.path.exists(path):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 3, (n,), generator=g)
        images = 0.5 * torch.randn(n, 1, 6, 6, generator=g)
        for i, k in enumerate(labels.tolist()):
            images[i, 0, 2 * k:2 * k + 2, :] += 1.5  # class k: a bright band of rows
        torch.save({"images": images, "labels": labels}, path)
    data = torch.load(path, weights_only=True)
    return TensorDataset(data["images"], data["labels"])


def make_model():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def evaluate(fabric, model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(-1) == y).sum()
            total += y.numel()
    model.train()
    return float(fabric.all_reduce(correct, reduce_op="sum")) / float(fabric.all_reduce(torch.tensor(total), reduce_op="sum"))


def train_epochs(fabric, model, optimizer, loader, epochs, state):
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            fabric.clip_gradients(model, optimizer, max_norm=2.0)
            optimizer.step()
            state["step"] += 1
            fabric.log_dict({"train_loss": loss.item()}, step=state["step"])
        state["epoch"] += 1
    return loss.item()


def main(out):
    os.makedirs(out, exist_ok=True)
    logger = TensorBoardLogger(root_dir=os.path.join(out, "tb"), name="classifier")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    fabric.launch()
    fabric.seed_everything(21)

    with fabric.rank_zero_first():
        dataset = prepare_dataset(os.path.join(out, "data.pt"))
    train_set, val_set = torch.utils.data.random_split(dataset, [320, 64], generator=torch.Generator().manual_seed(0))
    train_loader, val_loader = fabric.setup_dataloaders(
        DataLoader(train_set, batch_size=32, shuffle=True), DataLoader(val_set, batch_size=64)
    )

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)
    state = {"model": model, "optimizer": optimizer, "step": 0, "epoch": 0}

    before = evaluate(fabric, model, val_loader)
    train_epochs(fabric, model, optimizer, train_loader, 2, state)
    checkpoint = os.path.join(out, "ckpt", "epoch2.ckpt")
    fabric.save(checkpoint, state)
    after = evaluate(fabric, model, val_loader)
    fabric.print(f"accuracy {before:.3f} -> {after:.3f} after {state['step']} steps")

    # A second model resumes from the checkpoint and must continue from the same place.
    model2 = make_model()
    model2, optimizer2 = fabric.setup(model2, torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9))
    restored = {"model": model2, "optimizer": optimizer2, "step": 0, "epoch": 0}
    fabric.load(checkpoint, restored)
    assert restored["step"] == state["step"] == 20 and restored["epoch"] == 2, (restored["step"], restored["epoch"])
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b), "loaded weights differ from the saved ones"
    assert evaluate(fabric, model2, val_loader) == after
    momentum = [optimizer2.state[p]["momentum_buffer"] for p in model2.parameters()]
    assert all(m is not None and m.abs().sum() > 0 for m in momentum), "optimizer state was not restored"
    logger.finalize("success")

    assert after > 0.9 and after > before, f"accuracy {before:.3f} -> {after:.3f}"
    events = glob.glob(os.path.join(out, "tb", "classifier", "**", "events.out.tfevents.*"), recursive=True)
    assert events, f"no TensorBoard event file under {out}/tb/classifier"
    fabric.print(f"CORPUS_OK fabric_image_classifier: accuracy {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
