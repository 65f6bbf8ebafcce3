"""Shared pieces of the benchmarks: models, data, statistics and the machine description.

Every variant (raw loop, fulmen, Lightning) builds its model and data through these
functions, so they start from the same weights, see the same batches in the same order and
should end at the same loss.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

# --------------------------------------------------------------------------- models


def mlp(width: int = 64, classes: int = 10) -> nn.Module:
    """The overhead-bound model: 64 → 64 → 10, a few microseconds of math per step."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A GPT-2-style decoder (pre-LayerNorm, causal SDPA, tied embeddings). GPT-2 small is
    ``GPT(vocab=50304, seq=1024, d_model=768, n_layer=12, n_head=12)`` (124M parameters)."""

    def __init__(self, vocab: int, seq: int, d_model: int, n_layer: int, n_head: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:  # GPT-2's: N(0, 0.02) weights, zero biases
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class Task(nn.Module):
    """The network and its loss: ``loss = task(batch)`` in every variant.

    It also holds the benchmark clock: the wall time at the start of forward number
    ``start_at``, every ``chunk`` calls after it, and at number ``stop_at`` (counted from 0).
    A run's window covers exactly ``stop_at - start_at`` whole steps of the framework's loop
    (data, hooks, logging, backward, optimizer), after warm-up and before any end-of-training
    work. ``per_step_us`` is the median over the window's chunks of their mean step time: on a
    shared machine a burst of another process's work lands in a few chunks and the median
    leaves them out, while everything a framework does periodically (a log row every 50 steps,
    a progress-bar refresh every 0.1 s) is spread over every chunk of 100 steps alike. Every
    variant pays the same clock reads.
    """

    def __init__(self, net: nn.Module, kind: str, start_at: int, stop_at: int, sync=None, chunk: Optional[int] = None) -> None:
        super().__init__()
        self.net = net
        self.kind = kind
        self.start_at = start_at
        self.stop_at = stop_at
        # On a GPU one chunk: a synchronisation per chunk would hide nothing the host does.
        self.chunk = chunk or (stop_at - start_at if sync is not None else max(1, (stop_at - start_at) // 20))
        self.calls = 0
        self.marks: List[float] = []
        self.c0 = self.c1 = 0.0
        self.last_loss: Optional[torch.Tensor] = None
        self._sync = sync  # torch.cuda.synchronize on a GPU: the clock must see finished work

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.calls
        self.calls = n + 1
        if self.start_at <= n <= self.stop_at and ((n - self.start_at) % self.chunk == 0 or n == self.stop_at):
            if self._sync is not None:
                self._sync()
            self.marks.append(time.perf_counter())
            if n == self.start_at:
                self.c0 = time.thread_time()
            elif n == self.stop_at:
                self.c1 = time.thread_time()
        out = self.net(x)
        if self.kind == "gpt":
            loss = F.cross_entropy(out.view(-1, out.size(-1)).float(), y.reshape(-1))
        else:
            loss = F.cross_entropy(out, y)
        self.last_loss = loss.detach()
        return loss

    def _check(self) -> None:
        if self.calls <= self.stop_at:
            raise RuntimeError(f"the clock saw {self.calls} forward calls, needs {self.stop_at + 1}")

    def window_us(self) -> float:
        """Mean step time over the whole window."""
        self._check()
        return (self.marks[-1] - self.marks[0]) / (self.stop_at - self.start_at) * 1e6

    def per_step_us(self) -> float:
        """Median over chunks of the chunk's mean step time (see the class docstring)."""
        self._check()
        n = self.stop_at - self.start_at
        bounds = list(range(0, n, self.chunk)) + [n]
        per_chunk = [
            (self.marks[i + 1] - self.marks[i]) / (bounds[i + 1] - bounds[i]) * 1e6
            for i in range(len(bounds) - 1)
            if bounds[i + 1] - bounds[i] == self.chunk or len(bounds) == 2  # a short tail chunk is left out
        ]
        return statistics.median(per_chunk)

    def cpu_per_step_us(self) -> float:
        """CPU time of this thread per step over the window: it leaves out the time the
        process waited for a core (not the slowdown other processes cause through caches)."""
        self._check()
        return (self.c1 - self.c0) / (self.stop_at - self.start_at) * 1e6


_COMPILED: Dict[tuple, tuple] = {}


@dataclass
class Spec:
    """What one benchmark run trains: model kind and sizes, batch, steps."""

    model: str = "mlp"  # mlp | gpt
    batch: int = 32
    warmup: int = 100
    steps: int = 2000
    lr: float = 1e-3
    seed: int = 0
    # gpt sizes
    vocab: int = 512
    seq: int = 128
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    device: str = "cpu"
    precision: str = "32-true"  # 32-true | bf16-mixed
    compile: bool = False
    optim: str = "adamw"  # adamw | sgd

    @property
    def total_steps(self) -> int:
        # One step more than timed: the clock stops at the start of step warmup + steps.
        return self.warmup + self.steps + 1

    def build_net(self) -> nn.Module:
        torch.manual_seed(self.seed)
        if self.model == "mlp":
            return mlp()
        if self.model == "gpt":
            return GPT(self.vocab, self.seq, self.d_model, self.n_layer, self.n_head)
        raise ValueError(f"unknown model {self.model!r}")

    def _net_key(self) -> tuple:
        return (self.model, self.vocab, self.seq, self.d_model, self.n_layer, self.n_head, self.device, self.seed)

    def build_task(self) -> Task:
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else None
        if self.compile:
            # One compiled network for all runs, reset to the same initial weights each time:
            # a fresh module per run would make torch.compile compile (or guard) again.
            key = self._net_key()
            if key not in _COMPILED:
                net = self.build_net().to(self.device)
                initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
                _COMPILED[key] = (net, torch.compile(net), initial)
            net, compiled, initial = _COMPILED[key]
            with torch.no_grad():
                net.load_state_dict(initial)
            for p in net.parameters():
                p.grad = None
            return Task(compiled, self.model, self.warmup, self.warmup + self.steps, sync=sync)
        net = self.build_net().to(self.device)
        return Task(net, self.model, self.warmup, self.warmup + self.steps, sync=sync)

    def dataset(self) -> Dataset:
        """Exactly ``total_steps`` batches, generated from the seed (the same for everyone)."""
        g = torch.Generator().manual_seed(self.seed + 1)
        n = self.total_steps * self.batch
        if self.model == "mlp":
            x = torch.randn(n, 64, generator=g)
            teacher = torch.randn(64, 10, generator=g)
            y = (x @ teacher).argmax(dim=1)
            return TensorDataset(x, y)
        tokens = torch.randint(0, self.vocab, (n, self.seq + 1), generator=g)
        return TensorDataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())

    def loader(self) -> DataLoader:
        # Sequential order: every framework must see the same batches for the losses to agree.
        return DataLoader(self.dataset(), batch_size=self.batch, shuffle=False)

    def optimizer(self, params) -> torch.optim.Optimizer:
        if self.optim == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.AdamW(params, lr=self.lr)


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def paired_ratios(variant: Sequence[float], baseline: Sequence[float]) -> List[float]:
    """variant/baseline round by round (runs of one round ran back to back)."""
    return [v / b for v, b in zip(variant, baseline) if v == v and b == b]


def fmt_ratio(r: float) -> str:
    return f"{r:.3f}×" if r == r else "–"


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fulmen": _version("fulmen"),
        "lightning": _version("lightning"),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def lightning_available() -> bool:
    try:
        import lightning  # noqa: F401
    except ImportError:
        return False
    return True


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
