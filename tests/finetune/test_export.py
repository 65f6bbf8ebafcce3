"""Export of fulmen checkpoints to directories that ``transformers`` and ``peft`` open with
their own ``from_pretrained``: the reloaded model gives the trained model's logits."""

from __future__ import annotations

import pytest
import torch

import fulmen
from ft_helpers import CausalLM, token_loader
from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.finetune import TrainableCheckpoint, export_pretrained

X = torch.arange(64).view(2, 32) % 251


def fit(module, tmp_path, callbacks=(), steps=4):
    run = fulmen.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                         callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False)
    run.fit(module, token_loader(32))
    path = tmp_path / "trained.ckpt"
    run.save_checkpoint(path)
    return path


def logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=X).logits


def test_full_checkpoint_exports_to_from_pretrained(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    module = CausalLM(tiny_base)
    path = fit(module, tmp_path)
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    assert not torch.equal(logits(fresh), logits(module.model))  # training changed the model
    out = export_pretrained(path, fresh, tmp_path / "export", prefix="model.")
    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert torch.equal(logits(reloaded), logits(module.model))


def test_adapter_checkpoint_exports_for_peft_and_merged(tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fulmen.finetune.hf import add_lora

    module = CausalLM(tiny_base, lora=4)
    path = fit(module, tmp_path, [TrainableCheckpoint()])
    trained = logits(module.model)

    target = add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_base)), r=4, alpha=8)
    out = export_pretrained(path, target, tmp_path / "adapter", prefix="model.")
    assert (out / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_base)), str(out))
    assert torch.equal(logits(reloaded), trained)

    target = add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_base)), r=4, alpha=8)
    merged = export_pretrained(path, target, tmp_path / "merged", prefix="model.", merge_adapters=True)
    plain = AutoModelForCausalLM.from_pretrained(str(merged))
    assert not any("lora" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(logits(plain), trained, atol=1e-5, rtol=1e-5)  # merging rounds differently


def test_export_refuses_other_base_and_bad_arguments(tiny_base, other_base, tmp_path):
    from transformers import AutoModelForCausalLM

    from fulmen.finetune.hf import add_lora

    module = CausalLM(tiny_base, lora=4)
    path = fit(module, tmp_path, [TrainableCheckpoint()], steps=1)
    wrong = add_lora(AutoModelForCausalLM.from_pretrained(str(other_base)), r=4, alpha=8)
    with pytest.raises(FulmenCheckpointError, match="different frozen base.*different values"):
        export_pretrained(path, wrong, tmp_path / "x", prefix="model.")
    with pytest.raises(FulmenConfigError, match="no save_pretrained"):
        export_pretrained(path, module, tmp_path / "x")
    with pytest.raises(FulmenCheckpointError, match="prefix='backbone.'.*model."):
        export_pretrained(path, wrong, tmp_path / "x", prefix="backbone.")


def test_corrupted_checkpoint_is_refused_by_its_checksum(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    path = fit(CausalLM(tiny_base), tmp_path, steps=1)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor data: torch.load alone would read it back silently
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    with pytest.raises(FulmenCheckpointError, match="corrupt"):
        export_pretrained(path, fresh, tmp_path / "export", prefix="model.")
    assert not (tmp_path / "export").exists()
