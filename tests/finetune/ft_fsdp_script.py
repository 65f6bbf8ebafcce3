"""Fine-tuning under FSDP in one 2-process launch (the Trainer re-runs this script for its
second rank). Rank r writes ``<out>/rank_<r>.json``; ``test_finetune_fsdp.py`` asserts on it.

Phases, all in the same processes: ``ddp`` (reference losses), ``fsdp_named``
(``auto_wrap_policy={"GPT2Block"}``), ``fsdp_auto`` (the default policy, read from the
model's ``_no_split_modules``, with activation checkpointing ``"auto"``) and ``meta``
(the model built on the meta device in ``configure_model`` and filled shard by shard by
``fulmen.finetune.load_pretrained``; its logits against a plain ``from_pretrained``), and
``llama`` (the same for a tiny Llama, whose rotary ``inv_freq`` no weights file holds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import fulmen  # noqa: E402
from ft_helpers import CausalLM, token_loader  # noqa: E402
from fulmen_fsdp import FSDPStrategy  # noqa: E402

FIXED = torch.arange(64).view(2, 32) % 251


def trainer(strategy):
    return fulmen.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=4, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          num_sanity_val_steps=0)


class Probe(CausalLM):
    """Records the logits of a fixed input (every rank runs the same forward)."""

    def validation_step(self, batch, batch_idx):
        self.logits = self.model(input_ids=FIXED).logits.detach()


def units(module):
    from torch.distributed.fsdp import FSDPModule

    return sorted({type(m).__name__ for m in module.modules() if isinstance(m, FSDPModule)})


def main(base: Path, out: Path, llama: Path) -> None:
    results = {}
    for name, strategy in [
        ("ddp", "ddp"),
        ("fsdp_named", FSDPStrategy(auto_wrap_policy={"GPT2Block"})),
        ("fsdp_auto", FSDPStrategy(activation_checkpointing_policy="auto")),
    ]:
        fulmen.seed_everything(0)
        model = CausalLM(base)
        run = trainer(strategy)
        run.fit(model, token_loader(32, batch_size=4))
        if name != "fsdp_auto":  # a full file (ddp) and a sharded directory (fsdp) for the export test
            run.save_checkpoint(out / f"{name}.ckpt")
        results[name] = {"losses": model.losses, "units": units(model),
                         "checkpointed": sorted({type(m).__name__ for m in model.modules()
                                                 if getattr(m, "_fulmen_activation_checkpointing", False)})}
    probe = Probe(base, meta=True)
    run = trainer(FSDPStrategy(auto_wrap_policy={"GPT2Block"}))
    run.validate(probe, token_loader(2, batch_size=1), verbose=False)
    report = probe.model.pretrained_load_report
    full_bytes = sum(p.numel() * p.element_size() for p in probe.model.parameters())
    local_numel = sum(p.to_local().numel() for p in probe.model.parameters())
    total_numel = sum(p.numel() for p in probe.model.parameters())
    from fulmen.finetune.meta_init import weight_files

    meta = {"file_tensors": len(weight_files(base)), "bytes_read": report.bytes_read, "full_bytes": full_bytes, "tensors": report.tensors,
            "local_numel": local_numel, "total_numel": total_numel, "units": units(probe)}
    if run.global_rank == 0:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(str(base)).eval()
        with torch.no_grad():
            expected = reference(input_ids=FIXED).logits
        meta["logits_equal"] = bool(torch.equal(expected, probe.logits))
        meta["logits_max_diff"] = float((expected - probe.logits).abs().max())
    results["meta"] = meta
    probe = Probe(llama, meta=True)
    run = trainer(FSDPStrategy(auto_wrap_policy={"LlamaDecoderLayer"}))
    run.validate(probe, token_loader(2, batch_size=1), verbose=False)
    if run.global_rank == 0:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
        with torch.no_grad():
            expected = reference(input_ids=FIXED).logits
        results["llama"] = {"logits_equal": bool(torch.equal(expected, probe.logits)),
                            "logits_max_diff": float((expected - probe.logits).abs().max())}
    (out / f"rank_{run.global_rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
