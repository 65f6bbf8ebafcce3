"""Shared pieces of the fine-tuning tests: a tiny GPT-2 saved with ``save_pretrained``,
byte-level token data from the standard library's own sources, a fulmen Module around a
``transformers`` causal LM, and a helper that runs a real multi-process launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SEQ = 32
CORPUS_FILES = ("textwrap.py", "shlex.py", "fnmatch.py", "bisect.py")


def tiny_config(**overrides):
    from transformers import GPT2Config

    settings = dict(vocab_size=256, n_positions=SEQ, n_embd=64, n_layer=4, n_head=2, bos_token_id=0,
                    eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    settings.update(overrides)
    return GPT2Config(**settings)


def save_tiny_gpt2(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny GPT-2 written by ``save_pretrained`` (safetensors)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    GPT2LMHeadModel(tiny_config()).save_pretrained(str(directory))
    return Path(directory)


def save_tiny_llama(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny Llama written by ``save_pretrained``: its rotary
    embedding keeps ``inv_freq`` as a non-persistent buffer, which no weights file holds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return Path(directory)


def corpus_tokens() -> torch.Tensor:
    """Bytes of a few standard-library modules: a real, offline text corpus."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    data = b"".join((stdlib / name).read_bytes() for name in CORPUS_FILES)
    return torch.tensor(list(data), dtype=torch.long)


def token_data(n: int = 64, offset: int = 0) -> TensorDataset:
    tokens = corpus_tokens()[offset * SEQ:]
    return TensorDataset(tokens[: n * SEQ].view(n, SEQ))


def token_loader(n: int = 64, batch_size: int = 8, offset: int = 0) -> DataLoader:
    return DataLoader(token_data(n, offset), batch_size=batch_size, shuffle=False)


class CausalLM(fulmen.Module):
    """A ``transformers`` causal LM as a fulmen Module.

    ``meta=True``: built from the config in ``configure_model`` (on the meta device under a
    sharding strategy) and filled with ``fulmen.finetune.load_pretrained``; otherwise read
    with the real ``from_pretrained`` in ``__init__``. ``lora``: peft adapters of that rank."""

    def __init__(self, source, meta: bool = False, lora: int = 0, lr: float = 1e-2) -> None:
        super().__init__()
        self.source, self.meta, self.lora, self.lr = str(source), meta, lora, lr
        self.model = None
        self.losses = []
        if not meta:
            from transformers import AutoModelForCausalLM

            self.model = self._adapt(AutoModelForCausalLM.from_pretrained(self.source))

    def _adapt(self, model):
        if self.lora:
            from fulmen.finetune.hf import add_lora

            model = add_lora(model, r=self.lora, alpha=2 * self.lora)
        return model

    def configure_model(self):
        if self.model is not None:
            return
        from fulmen.finetune import load_pretrained
        from fulmen.finetune.hf import causal_lm_from_config

        self.model = causal_lm_from_config(self.source)
        load_pretrained(self.model, self.source)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.model(input_ids=x, labels=x).loss
        self.losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val_loss", self.model(input_ids=x, labels=x).loss)

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.lr)


def run(cmd, cwd: Path, name: str = "launch", timeout: int = 240):
    """Run a launch with its output in ``cwd/<name>.log``; returns the process with its log."""
    log = Path(cwd) / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                              env=env, cwd=cwd)
    proc.log = log.read_text()
    proc.seconds = time.monotonic() - start
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())
