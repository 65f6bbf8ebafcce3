"""A character-level language model (embedding + small Transformer encoder with a causal
mask) on generated text, in a Fabric loop with gradient accumulation (Lightning 2.x).

Exercises: ``import lightning as L`` with ``L.fabric.Fabric`` and
``L.fabric.loggers.CSVLogger``, fabric.no_backward_sync on accumulation micro-steps,
fabric.autocast, fabric.clip_gradients(max_norm), a step learning-rate scheduler,
fabric.log, fabric.print, the perplexity before and after.

Run: python fabric_language_model.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import math
import os
import sys
import tempfile

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

SEQ = 16
ACCUMULATE = 2


def make_text(repeats=60):
    """Sentences built from a small grammar: predictable enough to learn in seconds."""
    g = torch.Generator().manual_seed(0)
    subjects, verbs, objects = ["the cat", "a dog", "my bird"], ["sees", "likes", "eats"], ["fish.", "seeds.", "bread."]
    words = []
    for _ in range(repeats):
        i, j, k = torch.randint(0, 3, (3,), generator=g).tolist()
        words.append(f"{subjects[i]} {verbs[j]} {objects[k]}")
    return " ".join(words)


class CharWindows(Dataset):
    def __init__(self, text):
        self.vocab = sorted(set(text))
        self.ids = torch.tensor([self.vocab.index(c) for c in text])

    def __len__(self):
        return len(self.ids) - SEQ - 1

    def __getitem__(self, i):
        return self.ids[i:i + SEQ], self.ids[i + 1:i + SEQ + 1]


class CharTransformer(nn.Module):
    def __init__(self, vocab, dim=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.zeros(SEQ, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1)
        self.out = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(SEQ), persistent=False)

    def forward(self, ids):
        h = self.embed(ids) + self.position[: ids.size(1)]
        return self.out(self.encoder(h, mask=self.mask[: ids.size(1), : ids.size(1)], is_causal=True))


def perplexity(fabric, model, loader):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, targets in loader:
            logits = model(ids)
            total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    model.train()
    return math.exp(total / count)


def main(out):
    L.seed_everything(29)
    logger = L.fabric.loggers.CSVLogger(root_dir=out, name="lm")
    fabric = L.fabric.Fabric(accelerator="cpu", devices=1, loggers=logger)
    fabric.launch()

    dataset = CharWindows(make_text())
    train_loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=32, shuffle=True, drop_last=True))
    eval_loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=128))
    model = CharTransformer(len(dataset.vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.7)
    model, optimizer = fabric.setup(model, optimizer)

    before = perplexity(fabric, model, eval_loader)
    step = 0
    for epoch in range(2):
        for i, (ids, targets) in enumerate(train_loader):
            last_micro_step = (i + 1) % ACCUMULATE == 0
            with fabric.no_backward_sync(model, enabled=not last_micro_step):
                with fabric.autocast():
                    logits = model(ids)
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
                fabric.backward(loss / ACCUMULATE)
            if last_micro_step:
                fabric.clip_gradients(model, optimizer, max_norm=1.0)
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
                step += 1
                fabric.log("train_loss", loss.item(), step=step)
        fabric.print(f"epoch {epoch}: loss {loss.item():.3f}, lr {scheduler.get_last_lr()[0]:.2e}")
    after = perplexity(fabric, model, eval_loader)
    logger.finalize("success")

    vocab = len(dataset.vocab)
    assert before > vocab * 0.5, f"an untrained model should be near-uniform: perplexity {before:.2f}, vocab {vocab}"
    assert after < before / 3, f"perplexity {before:.2f} -> {after:.2f}"
    assert step == 2 * (len(train_loader) // ACCUMULATE), step
    metrics = os.path.join(logger.log_dir, "metrics.csv")
    assert os.path.isfile(metrics), f"no {metrics}"
    with open(metrics) as f:
        lines = f.read().splitlines()
    assert "train_loss" in lines[0].split(","), lines[0]
    assert len(lines) - 1 == step, f"{len(lines) - 1} logged rows for {step} optimizer steps"
    fabric.print(f"CORPUS_OK fabric_language_model: perplexity {before:.2f} -> {after:.2f} (vocab {vocab})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
