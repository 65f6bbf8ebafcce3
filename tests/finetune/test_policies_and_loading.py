"""Layer-class policies (by name, by ``_no_split_modules``) and pretrained loading on one
process; ``import fulmen`` stays free of transformers/peft/safetensors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import fulmen
from ft_helpers import CausalLM, tiny_config, token_loader
from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.finetune import checkpoint_layers, load_pretrained, no_split_modules, resolve_policy
from fulmen.finetune.policies import select_modules

X = torch.arange(64).view(2, 32) % 251


def reference(base):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base)).eval()


def test_auto_policy_reads_no_split_modules_through_wrappers(tiny_base):
    module = CausalLM(tiny_base, lora=2)  # fulmen Module > PeftModel > GPT2LMHeadModel
    assert no_split_modules(module) == {"GPT2Block"}
    blocks = select_modules(module, resolve_policy(module, "auto", "policy"))
    assert [type(b).__name__ for b in blocks] == ["GPT2Block"] * 4
    assert resolve_policy(torch.nn.Sequential(torch.nn.Linear(2, 2)), "auto", "policy") is None


def test_unknown_class_name_is_an_error_listing_the_blocks(tiny_base):
    module = CausalLM(tiny_base)
    with pytest.raises(FulmenConfigError, match=r"auto_wrap_policy names 'GPT2Blok'.*GPT2Block"):
        resolve_policy(module, {"GPT2Blok"}, "auto_wrap_policy")


def test_checkpoint_layers_keeps_names_and_gradients(tiny_base):
    plain, checkpointed = reference(tiny_base).train(), reference(tiny_base).train()
    assert checkpoint_layers(checkpointed, "GPT2Block") == 4
    assert type(checkpointed.transformer.h[0]).__name__ == "CheckpointedGPT2Block"
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    for model in (plain, checkpointed):
        model(input_ids=X, labels=X).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
    with pytest.raises(FulmenConfigError, match="selects no module"):
        checkpoint_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_meta_model_filled_on_one_device_matches_from_pretrained(tiny_base):
    from fulmen.finetune.hf import causal_lm_from_config

    with torch.device("meta"):
        model = causal_lm_from_config(tiny_base)
    report = load_pretrained(model, tiny_base, device=torch.device("cpu"))
    assert model.lm_head.weight is model.transformer.wte.weight  # the tie survived materialisation
    assert report.bytes_read == sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=X).logits, reference(tiny_base)(input_ids=X).logits)


def test_meta_llama_gets_its_rotary_buffers_recomputed(tiny_llama):
    """Llama's rotary ``inv_freq`` is a non-persistent buffer: no file holds it, so after
    materialisation it must be computed again, not left as uninitialised memory."""
    from fulmen.finetune.hf import causal_lm_from_config

    with torch.device("meta"):
        model = causal_lm_from_config(tiny_llama)
    load_pretrained(model, tiny_llama, device=torch.device("cpu"))
    expected = reference(tiny_llama)
    for name, buffer in expected.named_buffers():
        assert torch.equal(model.get_buffer(name), buffer), name
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=X % 256).logits, expected(input_ids=X % 256).logits)


def test_meta_non_persistent_buffer_that_cannot_be_recomputed_is_an_error(tmp_path):
    from safetensors.torch import save_file

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)
            self.register_buffer("scale", torch.full((4,), 2.0), persistent=False)

    save_file(Scaled().state_dict(), str(tmp_path / "model.safetensors"))
    with torch.device("meta"):
        model = Scaled()
    with pytest.raises(FulmenConfigError, match=r"non-persistent buffer 'scale' of .*Scaled.*persistent=True"):
        load_pretrained(model, tmp_path, device=torch.device("cpu"))


def test_trainer_single_device_configure_model_with_load_pretrained(tiny_base):
    class Probe(CausalLM):
        def validation_step(self, batch, batch_idx):
            self.logits = self.model(input_ids=X).logits

    probe = Probe(tiny_base, meta=True)
    fulmen.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False).validate(probe, token_loader(2), verbose=False)
    assert torch.equal(probe.logits, reference(tiny_base)(input_ids=X).logits)


def test_prefix_and_mismatches_are_named(tiny_base, tmp_path):
    from transformers import GPT2LMHeadModel

    module = CausalLM(tiny_base)
    torch.nn.init.zeros_(module.model.transformer.wpe.weight)
    load_pretrained(module, tiny_base, prefix="model.")
    assert torch.equal(module.model.transformer.wpe.weight, reference(tiny_base).transformer.wpe.weight)
    with pytest.raises(FulmenCheckpointError, match="missing from the files.*prefix="):
        load_pretrained(module, tiny_base)
    narrow = GPT2LMHeadModel(tiny_config(n_embd=32))
    before = {n: p.detach().clone() for n, p in narrow.named_parameters()}
    with pytest.raises(FulmenCheckpointError, match=r"pretrained tensor '[\w.]+' has shape \[\d+(, \d+)?\] but the model's has \["):
        load_pretrained(narrow, tiny_base)
    assert all(torch.equal(before[n], p) for n, p in narrow.named_parameters())  # nothing half-loaded
    with pytest.raises(FulmenCheckpointError, match="holds no safetensors weights"):
        load_pretrained(narrow, tmp_path)


def test_import_fulmen_does_not_import_transformers_or_peft():
    code = (
        "import sys, fulmen, fulmen.finetune\n"
        "from fulmen.finetune import TrainableCheckpoint, load_pretrained, export_pretrained, checkpoint_layers\n"
        "heavy = [m for m in ('transformers', 'peft', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
