"""FSDP on 2 real processes (gloo, CPU): layer-class wrapping gives DDP's losses, and a model
built on the meta device and filled shard by shard gives plain ``from_pretrained``'s logits
while each rank reads only its share of the weights (also a Llama, whose rotary buffers no
weights file holds)."""

from __future__ import annotations

import pytest

from ft_helpers import HERE, PYTHON, read_json, run

pytest.importorskip("fulmen_fsdp", reason="needs fulmen-strategy-fsdp")


class Launch(list):
    """The per-rank results of the launch, with its output directory as ``out``."""

    out = None


@pytest.fixture(scope="module")
def launch(tiny_base, tiny_llama, tmp_path_factory):
    """One launch; its output directory is kept as ``launch.out`` for the export test."""
    out = tmp_path_factory.mktemp("ft_fsdp")
    proc = run([PYTHON, HERE / "ft_fsdp_script.py", tiny_base, out, tiny_llama], out, "fsdp")
    assert proc.returncode == 0, proc.log[-6000:]
    results = Launch(read_json(out / f"rank_{r}.json") for r in range(2))
    results.out = out
    return results


def test_layer_class_wrapping_gives_ddp_losses(launch):
    for rank in launch:
        assert rank["fsdp_named"]["units"] == ["FSDPGPT2Block"]  # the blocks became shard units
        assert rank["fsdp_named"]["losses"] == pytest.approx(rank["ddp"]["losses"], abs=1e-5)
        assert rank["ddp"]["losses"][-1] < rank["ddp"]["losses"][0]
    assert launch[0]["ddp"]["losses"] != launch[1]["ddp"]["losses"]  # each rank saw its own batches


def test_default_policy_reads_no_split_modules_and_checkpoints(launch):
    for rank in launch:
        auto = rank["fsdp_auto"]
        assert auto["units"] == ["FSDPCheckpointedGPT2Block"]  # from GPT2's _no_split_modules
        assert auto["checkpointed"] == ["FSDPCheckpointedGPT2Block"]
        assert auto["losses"] == pytest.approx(rank["ddp"]["losses"], abs=1e-5)


def test_meta_init_and_sharded_loading_match_from_pretrained(launch):
    assert launch[0]["meta"]["logits_equal"], launch[0]["meta"]["logits_max_diff"]
    for rank in launch:
        meta = rank["meta"]
        assert meta["tensors"] == meta["file_tensors"]  # every tensor of the files (lm_head is tied to wte)
        # Each rank read and holds about half of the model, never all of it.
        assert meta["bytes_read"] <= 0.55 * meta["full_bytes"]
        assert meta["local_numel"] <= 0.55 * meta["total_numel"]
    assert sum(r["meta"]["local_numel"] for r in launch) == launch[0]["meta"]["total_numel"]


def test_meta_llama_under_fsdp_gets_its_rotary_buffers(launch):
    """inv_freq is a non-persistent buffer: recomputed at materialisation, not garbage."""
    assert launch[0]["llama"]["logits_equal"], launch[0]["llama"]["logits_max_diff"]


def test_sharded_checkpoint_exports_to_from_pretrained(launch, tiny_base, tmp_path):
    """The 2-rank sharded checkpoint is consolidated on one process and exported; the reloaded
    model gives the logits of the same weights loaded by hand, and DDP's (same training)."""
    import torch
    from transformers import AutoModelForCausalLM

    from fulmen.finetune import checkpoint_weights, export_pretrained

    sharded = launch.out / "fsdp_named.ckpt"
    assert sharded.is_dir()
    x = torch.arange(64).view(2, 32) % 251
    out = export_pretrained(sharded, AutoModelForCausalLM.from_pretrained(str(tiny_base)), tmp_path / "export",
                            prefix="model.")
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    by_hand = AutoModelForCausalLM.from_pretrained(str(tiny_base)).eval()
    by_hand.load_state_dict(checkpoint_weights(sharded, prefix="model."))
    ddp = AutoModelForCausalLM.from_pretrained(str(tiny_base)).eval()
    ddp.load_state_dict(checkpoint_weights(launch.out / "ddp.ckpt", prefix="model."))
    with torch.no_grad():
        got, expected, reference = (m(input_ids=x).logits for m in (reloaded, by_hand, ddp))
    assert torch.equal(got, expected)
    torch.testing.assert_close(got, reference, atol=1e-4, rtol=1e-4)
