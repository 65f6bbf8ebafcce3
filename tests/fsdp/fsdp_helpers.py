"""Shared pieces of the FSDP tests: a small GPT-style transformer, token data, and a helper
that runs a script as a real multi-process launch and keeps its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import fulmen

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
LAUNCH_TIMEOUT = 180
VOCAB, SEQ = 32, 8


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and an MLP."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class TinyGPTNet(nn.Module):
    """The network alone, for Fabric loops (a plain nn.Module)."""

    def __init__(self, dim: int = 16, heads: int = 2, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(SEQ, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, idx):
        x = self.embed(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def lm_loss(logits, targets):
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


class TinyGPT(fulmen.Module):
    """The same network as a fulmen Module; with ``meta_init`` its layers are built in
    ``configure_model`` (on the meta device under FSDP, materialised shard by shard)."""

    def __init__(self, dim: int = 16, heads: int = 2, layers: int = 2, dropout: float = 0.0, lr: float = 0.01,
                 meta_init: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = None
        self.built_on_meta = None
        if not meta_init:
            self.configure_model()

    def configure_model(self):
        if self.net is not None:
            return
        hp = self.hparams
        self.net = TinyGPTNet(hp.dim, hp.heads, hp.layers, hp.dropout)
        self.built_on_meta = self.net.head.weight.is_meta

    def forward(self, idx):
        return self.net(idx)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = lm_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", lm_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def token_data(n: int = 64, seed: int = 0) -> TensorDataset:
    """Sequences whose next token is a fixed function of the current one (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=generator)
    return TensorDataset(x, (3 * x + 1) % VOCAB)


def token_loader(n: int = 64, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    return DataLoader(token_data(n), batch_size=batch_size, shuffle=shuffle)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd, cwd: Path, name: str = "launch", timeout: int = LAUNCH_TIMEOUT, env=None):
    """Run a launch with its output in ``cwd/<name>.log``; returns the process, its log
    text and the seconds it took."""
    log = Path(cwd) / f"{name}.log"
    start = time.monotonic()
    environment = {**os.environ, **(env or {})}
    environment.pop("MASTER_PORT", None)
    environment.setdefault("OMP_NUM_THREADS", "1")
    with open(log, "w") as handle:
        proc = subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                              env=environment, cwd=cwd)
    proc.log = log.read_text()
    proc.seconds = time.monotonic() - start
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def ranks(directory: Path, count: int = 2):
    """The per-rank JSON results a launch wrote into ``directory``."""
    return [read_json(Path(directory) / f"rank_{r}.json") for r in range(count)]
