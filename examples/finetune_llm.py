"""Fine-tune a small causal language model with LoRA, offline, on any machine with Python.

Two stages, both ordinary fulmen programs:

1. *Pretraining* (skipped when ``OUT/base`` exists): a tiny GPT-2 built from a local config
   learns to predict the bytes of the standard library's top-level modules
   (``sysconfig.get_paths()["stdlib"]/*.py``, sorted), then is written with
   ``save_pretrained`` — the "pretrained model" of the recipe.
2. *Fine-tuning*: the model is read back with the real ``from_pretrained(OUT/base)``, gets
   LoRA adapters (peft) and is trained on a part of the standard library it has never seen:
   ``pydoc_data/topics.py``, the English text of ``help()``'s topics (its first 90% of
   windows; the last 10% are the validation set), in bf16 with activation
   checkpointing of its ``GPT2Block`` layers, on ``--strategy single`` (one process),
   ``ddp`` or ``fsdp`` (two processes each; FSDP shards by the model's own
   ``_no_split_modules``). Validation perplexity is printed before and after. The adapters
   are checkpointed alone (``TrainableCheckpoint``) and exported to ``OUT/adapter``, a
   directory ``peft.PeftModel.from_pretrained`` opens.

    python examples/finetune_llm.py --out /tmp/ft_llm                    # defaults
    python examples/finetune_llm.py --out /tmp/ft_llm --strategy fsdp    # two processes

Tokens are bytes (a vocabulary of 256), so no tokenizer has to be downloaded or trained.
"""

from __future__ import annotations

import argparse
import math
import sysconfig
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.finetune import TrainableCheckpoint, checkpoint_layers, export_pretrained

STDLIB = Path(sysconfig.get_paths()["stdlib"])
HELD_OUT = Path("pydoc_data") / "topics.py"  # prose (help() topics): a new domain for a model of code
VALIDATION_FRACTION = 0.1


def pretraining_files():
    return sorted(STDLIB.glob("*.py"))


def finetuning_data(seq: int, val_windows: int):
    """(train, validation): the held-out file's windows in order, the last tenth for validation."""
    data = windows([STDLIB / HELD_OUT], seq).tensors[0]
    cut = int(len(data) * (1 - VALIDATION_FRACTION))
    val = data[cut:][:val_windows] if val_windows else data[cut:]
    return TensorDataset(data[:cut]), TensorDataset(val)


def windows(files, seq: int, limit: int = 0) -> TensorDataset:
    """Non-overlapping windows of ``seq`` bytes over the files, in order."""
    data = torch.tensor(list(b"".join(f.read_bytes() for f in files)), dtype=torch.long)
    count = data.numel() // seq
    if limit:
        count = min(count, limit)
    return TensorDataset(data[: count * seq].view(count, seq))


def tiny_gpt2_config(seq: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=256, n_positions=seq, n_embd=128, n_layer=4, n_head=4,
                      bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


class CausalLM(fulmen.Module):
    """Next-byte prediction with any ``transformers`` causal LM held as ``self.model``."""

    def __init__(self, model, lr: float) -> None:
        super().__init__()
        self.model = model
        self.lr = lr

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.model(input_ids=x, labels=x).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val_loss", self.model(input_ids=x, labels=x).loss, sync_dist=True)

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]  # the adapters only, under LoRA
        return torch.optim.AdamW(trainable, lr=self.lr, weight_decay=0.0)


def quiet_trainer(**kwargs) -> fulmen.Trainer:
    settings = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, enable_checkpointing=False)
    settings.update(kwargs)
    return fulmen.Trainer(**settings)


def pretrain(args, base: Path) -> None:
    from transformers import GPT2LMHeadModel

    fulmen.seed_everything(0)
    module = CausalLM(GPT2LMHeadModel(tiny_gpt2_config(args.seq)), lr=3e-3)
    data = DataLoader(windows(pretraining_files(), args.seq), batch_size=args.batch_size, shuffle=True)
    quiet_trainer(devices=1, max_steps=args.pretrain_steps).fit(module, data)  # float32: faster on most CPUs
    module.model.save_pretrained(str(base))
    print(f"pretrained {sum(p.numel() for p in module.parameters()):,} parameters for {args.pretrain_steps} steps "
          f"on {len(pretraining_files())} stdlib modules; saved to {base}")


def strategy_for(name: str):
    if name == "single":
        return "auto", 1
    if name == "ddp":
        return "ddp", 2
    if name == "fsdp":
        from fulmen_fsdp import FSDPStrategy

        # The shard units and the checkpointed layers are the model's _no_split_modules (GPT2Block).
        return FSDPStrategy(auto_wrap_policy="auto", activation_checkpointing_policy="auto"), 2
    raise SystemExit(f"--strategy {name!r}: choose single, ddp or fsdp")


def lora_model(base: Path, rank: int):
    from transformers import AutoModelForCausalLM

    from fulmen.finetune.hf import add_lora

    model = AutoModelForCausalLM.from_pretrained(str(base))
    return add_lora(model, r=rank, alpha=2 * rank, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)


def finetune(args, base: Path, out: Path) -> None:
    strategy, devices = strategy_for(args.strategy)
    fulmen.seed_everything(0)
    model = lora_model(base, args.lora_rank)
    if args.strategy != "fsdp":
        checkpoint_layers(model, "auto")  # FSDP applies its activation_checkpointing_policy instead
    module = CausalLM(model, lr=args.lr)
    train_data, val_data = finetuning_data(args.seq, args.val_windows)
    train = DataLoader(train_data, batch_size=args.batch_size, shuffle=True)
    val = DataLoader(val_data, batch_size=args.batch_size)
    callbacks = [] if args.strategy == "fsdp" else [TrainableCheckpoint()]  # FSDP checkpoints are sharded already
    trainer = quiet_trainer(devices=devices, strategy=strategy, precision="bf16-mixed", max_steps=args.finetune_steps,
                            callbacks=callbacks, val_check_interval=None)
    before = trainer.validate(module, val, verbose=False)[0]["val_loss"]
    trainer.fit(module, train)
    after = trainer.validate(module, val, verbose=False)[0]["val_loss"]
    checkpoint = out / ("finetuned.ckpt" if callbacks else "finetuned-sharded.ckpt")
    trainer.save_checkpoint(checkpoint)
    if trainer.is_global_zero:
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in module.parameters())
        print(f"LoRA fine-tune ({args.strategy}, {devices} process(es), bf16-mixed, activation checkpointing): "
              f"{trained:,} of {total:,} parameters trained for {args.finetune_steps} steps on "
              f"{HELD_OUT} ({len(train_data)} windows; {len(val_data)} held out for validation)")
        print(f"validation perplexity before fine-tuning: {math.exp(before):.2f}")
        print(f"validation perplexity after fine-tuning:  {math.exp(after):.2f}")
        adapter = export_pretrained(checkpoint, lora_model(base, args.lora_rank), out / "adapter", prefix="model.")
        print(f"checkpoint {checkpoint} ({_size(checkpoint)}); adapters exported to {adapter} "
              "(open with peft.PeftModel.from_pretrained)")
        if math.exp(after) > (1 - args.require_improvement) * math.exp(before):
            raise SystemExit(f"perplexity fell by less than {args.require_improvement:.0%}: fine-tuning did not work")


def _size(path: Path) -> str:
    total = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 1e6:.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working directory (base model, checkpoints, export)")
    parser.add_argument("--strategy", default="single", choices=["single", "ddp", "fsdp"])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2, help="fine-tuning learning rate (of the adapters)")
    parser.add_argument("--val-windows", type=int, default=256, help="validation windows (0: all)")
    parser.add_argument("--require-improvement", type=float, default=0.0, metavar="FRACTION",
                        help="exit with status 1 unless validation perplexity falls by this fraction (CI)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / "base"
    # Worker processes of ddp/fsdp re-run this script: the base exists by then, written by rank 0.
    if not (base / "config.json").is_file():
        pretrain(args, base)
    finetune(args, base, args.out)


if __name__ == "__main__":
    main()
