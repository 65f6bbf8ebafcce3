"""Layer-wise learning-rate decay: the expected rate per depth for the vision-transformer
layouts, prefixes and functions; no weight decay on norms and biases; frozen parameters left
out; clear errors; and with BaseFinetuning/BackboneFinetuning the frozen backbone gets no
gradient until its unfreeze epoch, then trains at its decayed rates (also after a resume)."""

from __future__ import annotations

import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks import BackboneFinetuning, BaseFinetuning, Callback, ModelCheckpoint
from fulmen.errors import FulmenConfigError, FulmenUserCodeError
from fulmen.finetune.param_groups import layer_decay_param_groups, unfreeze_with_layer_decay

LR, DECAY = 0.1, 0.5


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, width)

    def forward(self, x):
        return x + self.dense(self.norm(x)).relu()


class Embeddings(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.projection = nn.Linear(4, width)
        self.cls_token = nn.Parameter(torch.zeros(1, width))

    def forward(self, x):
        return self.projection(x) + self.cls_token


class Encoder(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Block(width) for _ in range(depth))


class TinyViT(nn.Module):
    """The parameter layout of a ViT encoder: embeddings, encoder.layer.N, final layernorm."""

    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.embeddings = Embeddings(width)
        self.encoder = Encoder(width, depth)
        self.layernorm = nn.LayerNorm(width)

    def forward(self, x):
        x = self.embeddings(x)
        for block in self.encoder.layer:
            x = block(x)
        return self.layernorm(x)


class Classifier(fulmen.Module):
    """Head registered before the backbone on purpose: depth comes from names, not order."""

    def __init__(self, unfreeze_with_decay: bool = True) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.backbone = TinyViT()

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(layer_decay_param_groups(self, LR, DECAY, weight_decay=0.05))


def _expected_depth(name: str) -> int:
    if name.startswith("backbone.embeddings"):
        return 0
    if name.startswith("backbone.encoder.layer."):
        return int(name.split(".")[3]) + 1
    return 4  # final layernorm and head: the top (3 blocks + embeddings)


def _lr_of(optimizer, param):
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_vit_layout_gets_decayed_rates_and_no_decay_on_norms_and_biases():
    module = Classifier()
    groups = layer_decay_param_groups(module, LR, DECAY, weight_decay=0.05)
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, param in module.named_parameters():
        group = by_param[id(param)]
        assert group["lr"] == pytest.approx(LR * DECAY ** (4 - _expected_depth(name))), name
        assert group["depth"] == _expected_depth(name)
        no_decay = param.ndim <= 1 or name.endswith(".bias")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert [g["depth"] for g in groups] == sorted(g["depth"] for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))


def test_timm_layout_and_extra_no_weight_decay_names():
    class TimmShaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
            self.patch_embed = nn.Conv2d(1, 8, 2)
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

    model = TimmShaped()
    groups = layer_decay_param_groups(model, 1.0, 0.8, weight_decay=0.1, no_weight_decay=["pos_embed", "cls_token"])
    group_of = {n: g for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    rates = {n: g["lr"] for n, g in group_of.items()}
    decays = {n: g["weight_decay"] for n, g in group_of.items()}
    assert rates["cls_token"] == rates["patch_embed.weight"] == pytest.approx(0.8 ** 3)
    assert rates["blocks.1.dense.weight"] == pytest.approx(0.8) and rates["head.weight"] == 1.0
    assert decays["pos_embed"] == decays["cls_token"] == 0.0 and decays["patch_embed.weight"] == 0.1


def test_hierarchical_models_need_explicit_layers():
    stage = nn.Module()
    stage.blocks = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model = nn.Module()
    model.stages = nn.Sequential(stage)
    with pytest.raises(FulmenConfigError, match=r"blocks inside numbered stages \(e.g. 'stages.0.blocks.0.weight'\)"):
        layer_decay_param_groups(model, 1.0, 0.5)
    groups = layer_decay_param_groups(model, 1.0, 0.5, layers=["stages.0.blocks.0", "stages.0.blocks.1"])
    assert [g["lr"] for g in groups] == [0.5, 0.5, 1.0, 1.0]


def test_prefixes_and_functions():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    groups = layer_decay_param_groups(model, 1.0, 0.5, layers=["0", ["1"], "2"])
    assert [(g["depth"], g["lr"]) for g in groups] == [(0, 0.25), (0, 0.25), (1, 0.5), (1, 0.5), (2, 1.0), (2, 1.0)]
    # a longer prefix wins over a shorter one; "1" does not match "10"
    deep = nn.Sequential(*[nn.Linear(1, 1) for _ in range(11)])
    groups = layer_decay_param_groups(deep, 1.0, 0.5, layers=[[str(i) for i in range(10) if i != 1], "1", "10"])
    lrs = {g["depth"]: g["lr"] for g in groups}
    assert lrs == {0: 0.25, 1: 0.5, 2: 1.0}
    assert len([p for g in groups if g["depth"] == 1 for p in g["params"]]) == 2
    groups = layer_decay_param_groups(model, 1.0, 0.5, layers=lambda name: int(name[0]) // 2)
    assert {g["depth"]: g["lr"] for g in groups} == {0: 0.5, 1: 1.0}


def test_frozen_parameters_are_left_out():
    module = Classifier()
    BaseFinetuning.freeze(module.backbone)
    groups = layer_decay_param_groups(module, LR, DECAY)
    params = [p for g in groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in module.head.parameters()}
    assert {g["lr"] for g in groups} == {LR}  # depths still counted over the whole model


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layer_decay=0.0), FulmenConfigError, r"layer_decay=0.0 must be a number in \(0, 1\]"),
    (dict(layer_decay=1.5), FulmenConfigError, r"layer_decay=1.5 must be a number in \(0, 1\]"),
    (dict(lr=-1.0), FulmenConfigError, "lr=-1.0 must be a positive number"),
    (dict(layers=["0", "1", "2", "nothing"]), FulmenConfigError, r"prefix\(es\) \['nothing'\] match no parameter"),
    (dict(layers=["0", "1"]), FulmenConfigError, r"2 parameter\(s\) match no layers prefix \(e.g. \['2.weight'"),
    (dict(layers=None), FulmenConfigError, "could not find the layers of this model by name"),
    (dict(layers="0"), FulmenConfigError, "must be a list of module-name prefixes"),
    (dict(layers=lambda name: -1), FulmenUserCodeError, "returned -1 for parameter '0.weight'"),
])
def test_bad_input_is_refused(kwargs, error, match):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    args = dict(lr=1.0, layer_decay=0.5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        layer_decay_param_groups(model, **args)


# ----------------------------------------------------------------------------- with finetuning callbacks


class LayerDecayUnfreeze(BaseFinetuning):
    """The backbone frozen until ``at_epoch``, then unfrozen layer by layer at decayed rates."""

    def __init__(self, at_epoch: int = 2) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == self.at_epoch:
            unfreeze_with_layer_decay(pl_module.backbone, optimizer, pl_module, LR, DECAY, weight_decay=0.05)


class GradientLog(Callback):
    """Per optimizer step: which backbone parameters have a gradient, and their learning rates."""

    def __init__(self) -> None:
        self.steps = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.steps.append({
            "epoch": trainer.current_epoch,
            "grads": {n: p.grad is not None and bool(p.grad.abs().sum() > 0)
                      for n, p in module.backbone.named_parameters()},
            "lrs": {n: _lr_of(optimizer, p) if p.requires_grad else None for n, p in module.named_parameters()},
        })


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(x, (x.sum(1) > 0).long() + (x[:, 0] > 1).long()), batch_size=8)


def _fit(tmp_path, callbacks, ckpt_path=None, max_epochs=4):
    fulmen.seed_everything(0)
    module = Classifier()
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False)
    trainer.fit(module, _data(), ckpt_path=ckpt_path)
    return trainer, module


def test_backbone_gets_no_gradient_until_unfrozen_then_its_decayed_rates(tmp_path):
    log = GradientLog()
    _fit(tmp_path, [LayerDecayUnfreeze(at_epoch=2), log], max_epochs=3)
    assert len(log.steps) == 12
    for step in log.steps:
        unfrozen = step["epoch"] >= 2
        assert all(has == unfrozen for has in step["grads"].values()), step["epoch"]
        for name, lr in step["lrs"].items():
            if name.startswith("head."):
                assert lr == LR
            elif unfrozen:
                assert lr == pytest.approx(LR * DECAY ** (4 - _expected_depth(name))), name
            else:
                assert lr is None, name


def test_layer_decay_unfreeze_resumes_exactly(tmp_path):
    def callbacks():
        return [LayerDecayUnfreeze(at_epoch=1),
                ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=6, save_top_k=-1)]

    _, straight = _fit(tmp_path / "a", callbacks())
    trainer, resumed = _fit(tmp_path / "b", callbacks(), ckpt_path=str(tmp_path / "ckpts" / "step=6.ckpt"))
    assert [g["depth"] for g in trainer.optimizers[0].param_groups][:2] == [4, 4]  # the head's, then the backbone's
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_backbone_finetuning_adds_its_group_beside_the_layer_decay_groups(tmp_path):
    log = GradientLog()
    trainer, module = _fit(tmp_path, [BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_lr=0.01), log],
                           max_epochs=2)
    groups = trainer.optimizers[0].param_groups
    head = {id(p) for p in module.head.parameters()}
    assert all(id(p) in head for g in groups[:-1] for p in g["params"])
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in module.backbone.parameters()}
    assert not any(any(s["grads"].values()) for s in log.steps if s["epoch"] == 0)
    assert all(all(s["grads"].values()) for s in log.steps if s["epoch"] == 1)
