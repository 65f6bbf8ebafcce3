"""LoRA fine-tune of a tiny GPT-2: per-step time and peak memory under fulmen's Trainer,
``transformers.Trainer`` and a hand-written loop, with the same model, data and settings.

    python benchmarks/finetune_llm.py                 # 3 interleaved repeats of each
    python benchmarks/finetune_llm.py --repeats 5 --steps 60

Each measurement runs in its own process (so peak resident memory is that variant's alone):
the model is the recipe's GPT-2 (4 layers, 128 wide, 842k parameters) from its config with
seed 0, LoRA r=8 on ``c_attn``/``c_proj``/``c_fc`` (peft), AdamW lr 1e-3 with no weight
decay, constant learning rate, no gradient clipping, batches of 16 windows of 128 bytes of
the standard library's ``email/`` package in file order, float32 on the CPU, one thread.
The mean training loss is accumulated on the device in all three (no per-step sync). Step
times are taken at the end of every optimizer step (one clock reading, the
same in all three); the first ``--warmup`` steps are left out and the median of the rest
is the figure. Repeats are interleaved so that a change in the machine's load hits all
variants alike; medians over repeats are reported, and each ratio to the hand-written loop is
the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

VARIANTS = ("loop", "fulmen", "hf_trainer")


def _now():
    """(wall, CPU) seconds: on a machine others load, this process's CPU time per step (one
    thread) is the steadier figure; wall time is what a user waits."""
    return time.perf_counter(), time.process_time()
SEQ, BATCH, LR, RANK = 128, 16, 1e-3, 8


def build():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from fulmen.finetune.hf import add_lora

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=SEQ, n_embd=128, n_layer=4, n_head=4, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = add_lora(GPT2LMHeadModel(config), r=RANK, alpha=2 * RANK, target_modules=["c_attn", "c_proj", "c_fc"],
                     fan_in_fan_out=True)
    files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "email").glob("*.py"))
    data = torch.tensor(list(b"".join(f.read_bytes() for f in files)), dtype=torch.long)
    windows = data[: (data.numel() // SEQ) * SEQ].view(-1, SEQ)
    return model, windows


class Windows:
    """Map-style dataset of ``{"input_ids", "labels"}`` dicts (what the HF Trainer's collator wants)."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, index):
        x = self.windows[index]
        return {"input_ids": x, "labels": x}


def run_loop(steps: int):
    import torch
    from torch.utils.data import DataLoader

    model, windows = build()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    loader = DataLoader(Windows(windows), batch_size=BATCH, shuffle=False)
    stamps = [_now()]
    model.train()
    batches = iter(loader)
    total = torch.zeros(())
    for _ in range(steps):
        batch = next(batches)
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach()
        stamps.append(_now())
    return stamps, float(total) / steps


def run_fulmen(steps: int):
    import torch
    from torch.utils.data import DataLoader

    import fulmen

    model, windows = build()
    stamps = [_now()]
    total = torch.zeros(())

    class LM(fulmen.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            return self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

        def configure_optimizers(self):
            return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)

        def on_train_batch_end(self, outputs):
            total.add_(outputs["loss"].detach())
            stamps.append(_now())

    module = LM()
    trainer = fulmen.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    stamps[0] = _now()
    trainer.fit(module, DataLoader(Windows(windows), batch_size=BATCH, shuffle=False))
    return stamps, float(total) / steps


def run_hf_trainer(steps: int):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, windows = build()
    stamps = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            stamps.append(_now())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(_now())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR, weight_decay=0.0,
            lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, optim="adamw_torch", use_cpu=True,
            save_strategy="no", report_to=[], logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            remove_unused_columns=False, seed=0, data_seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=Windows(windows), callbacks=[Stamp()])
        from torch.utils.data import SequentialSampler

        # File order, as in the other two (the Trainer shuffles by default).
        trainer._get_train_sampler = lambda *a, **k: SequentialSampler(trainer.train_dataset)
        result = trainer.train()
    return stamps, float(result.training_loss)


def child(variant: str, steps: int, warmup: int) -> None:
    import torch

    torch.set_num_threads(1)
    stamps, loss = {"loop": run_loop, "fulmen": run_fulmen, "hf_trainer": run_hf_trainer}[variant](steps)
    wall = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])][warmup:]
    cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])][warmup:]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "step_ms": 1000 * statistics.median(wall),
                      "cpu_ms": 1000 * statistics.median(cpu), "steps": len(wall) + warmup,
                      "peak_rss_mb": peak_mb, "mean_loss": loss}))


def main() -> None:
    parser = argparse.ArgumentParser(description="LoRA fine-tune: fulmen vs transformers.Trainer vs a plain loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--child", choices=VARIANTS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.steps, args.warmup)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    results = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--steps", str(args.steps),
                                  "--warmup", str(args.warmup)], capture_output=True, text=True, env=env, check=False)
            if out.returncode:
                sys.exit(f"{variant} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant].append(record)
            print(f"repeat {repeat + 1} {variant:10s} {record['step_ms']:8.2f} ms/step "
                  f"(CPU {record['cpu_ms']:8.2f})  peak RSS {record['peak_rss_mb']:7.1f} MB  "
                  f"mean loss {record['mean_loss']:.4f}", flush=True)
    print("\n| variant | wall ms/step | x loop (per round) | CPU ms/step | x loop (per round) | peak RSS MB "
          "| mean loss |")
    print("|---|---|---|---|---|---|---|")
    for variant in VARIANTS:
        ms = statistics.median(r["step_ms"] for r in results[variant])
        cpu = statistics.median(r["cpu_ms"] for r in results[variant])
        # Ratios are taken within each round (the variants ran back to back), then the median.
        wall_ratio = statistics.median(r["step_ms"] / l["step_ms"] for r, l in zip(results[variant], results["loop"]))
        cpu_ratio = statistics.median(r["cpu_ms"] / l["cpu_ms"] for r, l in zip(results[variant], results["loop"]))
        rss = statistics.median(r["peak_rss_mb"] for r in results[variant])
        loss = results[variant][-1]["mean_loss"]
        print(f"| {variant} | {ms:.1f} | {wall_ratio:.3f} | {cpu:.1f} | {cpu_ratio:.3f} | {rss:.0f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
