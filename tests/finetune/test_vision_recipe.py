"""``examples/finetune_vision.py`` for real (short settings): the pretrained encoder is saved
and loaded back through ``from_pretrained``, the full fine-tune (layer decay + EMA) beats
chance clearly and the linear probe; the layer layout of a real ``transformers`` ViT is
found by name; with ``timm`` installed (``nox -s finetune_vision_timm``) the same for a timm
ViT. Skipped where ``transformers``/``timm`` or scikit-learn are not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

SHORT = ["--pretrain-epochs", "10", "--epochs", "6"]


def _recipe():
    pytest.importorskip("sklearn")
    import finetune_vision

    return finetune_vision


def _needs(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        session = "finetune_vision_timm" if name == "timm" else "finetune_vision"
        pytest.skip(f"{name} is not installed (nox -s {session} installs it)")
    if name == "timm":
        try:
            import timm  # noqa: F401  (imports torchvision, which fails next to a CPU torch it was not built for)
        except Exception as exc:  # RuntimeError: operator torchvision::nms does not exist
            pytest.skip(f"timm does not import here ({exc}); nox -s finetune_vision_timm has a working pair")


def test_transformers_vit_layers_are_found_by_name():
    _needs("transformers")
    from fulmen.finetune import layer_decay_param_groups

    recipe = _recipe()
    encoder = recipe.HFViT().build()
    groups = layer_decay_param_groups(encoder, 1.0, 0.5)
    depth_of = {id(p): g["depth"] for g in groups for p in g["params"]}
    for name, param in encoder.named_parameters():
        if name.startswith("embeddings."):
            assert depth_of[id(param)] == 0, name
        elif name.startswith("layernorm."):
            assert depth_of[id(param)] == recipe.DEPTH + 1, name
        else:
            assert depth_of[id(param)] == int(name.split(".")[1]) + 1, name


@pytest.mark.parametrize("backbone", ["vit", "timm:vit_tiny_patch16_224"])
def test_recipe_full_finetune_beats_chance_and_the_linear_probe(tmp_path, backbone):
    _needs("transformers" if backbone == "vit" else "timm")
    recipe = _recipe()
    done = os.environ.get("FULMEN_VISION_RESULT") if backbone == "vit" else None
    if done:  # nox -s finetune_vision has just run the recipe with SHORT: check that run
        result = json.loads(Path(done).read_text())
        assert result["backbone"] == "vit", result
    else:
        result = recipe.main(["--backbone", backbone, "--root", str(tmp_path), *SHORT])
    assert result["pretrain_acc"] > 0.8
    assert result["full_finetune_acc"] > 0.6, result  # chance is 0.2
    assert result["full_finetune_acc"] > result["linear_probe_acc"], result


@pytest.mark.parametrize("backbone", ["vit", "timm:vit_tiny_patch16_224"])
def test_saved_encoder_loads_back_with_the_trained_weights(tmp_path, backbone):
    _needs("transformers" if backbone == "vit" else "timm")
    recipe = _recipe()
    kind = recipe.backbone_kind(backbone)
    _, trained = recipe.pretrain(kind, tmp_path / "pretrained", tmp_path, epochs=1, batch_size=64)
    loaded, fresh = kind.load(tmp_path / "pretrained"), kind.build()
    assert type(loaded) is type(trained)
    for (name, a), b, c in zip(trained.state_dict().items(), loaded.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, c) for a, c in zip(trained.state_dict().values(), fresh.state_dict().values()))
