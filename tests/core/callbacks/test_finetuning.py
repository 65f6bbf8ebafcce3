"""BaseFinetuning / BackboneFinetuning: freezing, unfreezing into a new param group, the
learning-rate schedule, train_bn, errors, and exact resume from a checkpoint."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import loader, quiet_trainer
from torch import nn

import fulmen
from fulmen.callbacks import BackboneFinetuning, BaseFinetuning, Callback, ModelCheckpoint
from fulmen.errors import FulmenUserCodeError


class BackboneModule(fulmen.Module):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.backbone = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=self.lr, momentum=0.9)


class Recorder(Callback):
    """Per epoch (at its end): every group's lr, and copies of backbone/head weights."""

    def __init__(self) -> None:
        self.lrs, self.linear, self.bn, self.head, self.requires_grad = [], [], [], [], []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        self.linear.append(module.backbone[0].weight.detach().clone())
        self.bn.append(module.backbone[1].weight.detach().clone())
        self.head.append(module.head.weight.detach().clone())
        self.requires_grad.append(module.backbone[0].weight.requires_grad)


def _fit(tmp_path, callbacks, max_epochs, ckpt_path=None, model=None, **kwargs):
    torch.manual_seed(0)
    model = model or BackboneModule()
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks, limit_train_batches=4, logger=False, **kwargs)
    trainer.fit(model, loader(n=32, shuffle=True), ckpt_path=ckpt_path)
    return trainer, model


def test_backbone_frozen_until_unfreeze_epoch_then_lr_schedule(tmp_path):
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the usual setup (train_bn, filtered optimizer) warns nothing
        _, model = _fit(tmp_path, [BackboneFinetuning(unfreeze_backbone_at_epoch=2), recorder], max_epochs=7)
    torch.manual_seed(0)
    initial = BackboneModule()  # the seed _fit uses: the weights before training
    # Epochs 0 and 1: the backbone's linear layer is frozen and unchanged; batch norm trains.
    assert recorder.requires_grad[:2] == [False, False]
    assert torch.equal(recorder.linear[0], initial.backbone[0].weight)
    assert torch.equal(recorder.linear[1], initial.backbone[0].weight)
    assert not torch.equal(recorder.bn[0], initial.backbone[1].weight)
    assert not torch.equal(recorder.head[1], recorder.head[0])
    # Epoch 2 on: a second group at 0.1 * 0.1, doubled each epoch, aligned to 0.1 at most.
    assert recorder.requires_grad[2:] == [True] * 5
    assert not torch.equal(recorder.linear[2], recorder.linear[1])
    assert [len(lrs) for lrs in recorder.lrs] == [1, 1, 2, 2, 2, 2, 2]
    backbone_lrs = [lrs[1] for lrs in recorder.lrs[2:]]
    assert backbone_lrs == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1])
    assert all(lrs[0] == 0.1 for lrs in recorder.lrs)
    # The new group holds the backbone's linear layer; its batch norm stayed in group 0.
    groups = model.trainer.optimizers[0].param_groups
    assert [p is model.backbone[0].weight for p in groups[1]["params"]].count(True) == 1
    assert any(p is model.backbone[1].weight for p in groups[0]["params"])


def test_train_bn_false_freezes_batch_norm_and_its_statistics(tmp_path):
    recorder = Recorder()
    torch.manual_seed(0)
    initial = BackboneModule()
    model = BackboneModule()
    model.load_state_dict(initial.state_dict())
    _fit(tmp_path, [BackboneFinetuning(unfreeze_backbone_at_epoch=1, train_bn=False, backbone_initial_lr=0.05,
                                       should_align=False, lambda_func=lambda epoch: 1.5), recorder],
         max_epochs=3, model=model)
    assert torch.equal(recorder.bn[0], initial.backbone[1].weight)  # frozen in epoch 0
    assert [lrs[1] for lrs in recorder.lrs[1:]] == pytest.approx([0.05, 0.075])
    # train_bn=False: batch norm is not in the new group (Lightning's behaviour) ...
    groups = model.trainer.optimizers[0].param_groups
    assert not any(p is model.backbone[1].weight for g in groups for p in g["params"])
    # ... and it tracked no statistics while frozen, tracks them once unfrozen.
    assert model.backbone[1].track_running_stats


def test_statistics_not_tracked_while_frozen(tmp_path):
    torch.manual_seed(0)
    model = BackboneModule()
    _fit(tmp_path, [BackboneFinetuning(unfreeze_backbone_at_epoch=5, train_bn=False)], max_epochs=1, model=model)
    bn = model.backbone[1]
    assert not bn.track_running_stats and not bn.weight.requires_grad
    assert torch.equal(bn.running_mean, torch.zeros(8)) and int(bn.num_batches_tracked) == 0


def test_module_without_backbone_is_refused(tmp_path):
    class NoBackbone(BackboneModule):
        def __init__(self):
            super().__init__()
            del self.backbone
            self.trunk = nn.Linear(8, 8)

        def forward(self, x):
            return self.head(self.trunk(x))

    with pytest.raises(FulmenUserCodeError, match="attribute `backbone`"):
        _fit(tmp_path, [BackboneFinetuning()], max_epochs=1, model=NoBackbone())


def test_base_finetuning_must_be_subclassed(tmp_path):
    with pytest.raises(NotImplementedError, match="freeze_before_training"):
        _fit(tmp_path, [BaseFinetuning()], max_epochs=1)


def test_custom_subclass_and_filter_on_optimizer_warning(tmp_path):
    class UnfreezeHead(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze([pl_module.backbone, pl_module.head])

        def finetune_function(self, pl_module, current_epoch, optimizer):
            if current_epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.head, optimizer, initial_denom_lr=4.0)

    class AllParams(BackboneModule):
        def configure_optimizers(self):  # also the frozen parameters: the misconfiguration warned about
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    with pytest.warns(fulmen.errors.FulmenWarning, match="already in the optimizer"):
        _, model = _fit(tmp_path, [UnfreezeHead()], max_epochs=2, model=AllParams())
    assert len(model.trainer.optimizers[0].param_groups) == 1  # nothing new to add

    recorder = Recorder()
    _, model = _fit(tmp_path, [UnfreezeHead(), recorder], max_epochs=2)
    # Only the batch norm trains at first; the head joins at lr 0.1 / 4.
    assert recorder.lrs == [[0.1], [0.1, 0.025]]
    torch.manual_seed(0)
    initial = BackboneModule()
    assert torch.equal(recorder.head[0], initial.head.weight)
    assert not torch.equal(recorder.head[1], initial.head.weight)


def test_flatten_modules_and_filter_params():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 1)))
    flat = BaseFinetuning.flatten_modules(nn.ModuleDict({"a": net}))
    assert [type(m) for m in flat] == [nn.Linear, nn.BatchNorm1d, nn.Linear]
    BaseFinetuning.freeze(net, train_bn=True)
    trainable = list(BaseFinetuning.filter_params(net, requires_grad=True))
    assert trainable == [net[1][0].weight, net[1][0].bias]
    assert list(BaseFinetuning.filter_params(net, train_bn=False, requires_grad=True)) == []
    BaseFinetuning.make_trainable([net[0]])
    assert net[0].weight.requires_grad and not net[1][1].weight.requires_grad


@pytest.mark.parametrize("every_n_train_steps", [8, 10])  # end of epoch 1 / inside epoch 2
def test_exact_resume(tmp_path, every_n_train_steps):
    """4 epochs straight vs. resumed from the checkpoint after step 8 (end of epoch 1, the
    unfreeze epoch) or step 10 (mid epoch 2, whose lr doubling must not run twice): same
    parameters, groups and learning rates."""
    def callbacks():
        return [BackboneFinetuning(unfreeze_backbone_at_epoch=1), ModelCheckpoint(
            dirpath=tmp_path / "ckpts", filename="{step}", every_n_train_steps=every_n_train_steps, save_top_k=-1)]

    straight_trainer, straight = _fit(tmp_path / "a", callbacks(), max_epochs=4)
    path = tmp_path / "ckpts" / f"step={every_n_train_steps}.ckpt"
    assert path.exists()
    resumed_trainer, resumed = _fit(tmp_path / "b", callbacks(), max_epochs=4, ckpt_path=str(path))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    a_groups = straight_trainer.optimizers[0].param_groups
    b_groups = resumed_trainer.optimizers[0].param_groups
    assert [g["lr"] for g in a_groups] == [g["lr"] for g in b_groups]
    assert len(a_groups) == 2
    assert all(p.requires_grad for p in resumed.parameters())


def test_registered_by_name(tmp_path):
    from fulmen.callbacks import GradientAccumulationScheduler, StochasticWeightAveraging

    trainer = quiet_trainer(tmp_path, callbacks=["backbone_finetuning"], logger=False)
    assert any(type(cb) is BackboneFinetuning for cb in trainer.callbacks)
    registry = trainer.fabric.registry
    assert {"backbone_finetuning", "stochastic_weight_averaging", "gradient_accumulation_scheduler"} <= set(registry.names("callback"))
    assert type(registry.create("callback", "stochastic_weight_averaging", swa_lrs=0.1)) is StochasticWeightAveraging
    assert type(registry.create("callback", "gradient_accumulation_scheduler", scheduling={0: 2})) is GradientAccumulationScheduler
