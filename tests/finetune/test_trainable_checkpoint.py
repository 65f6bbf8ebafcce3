"""LoRA under the Trainer on one CPU: only the adapters change and the loss falls; with
``TrainableCheckpoint`` the checkpoint holds the adapters only (a tenth of the full one at
most), resumes bit for bit, and refuses a different frozen base by naming what differs."""

from __future__ import annotations

import pytest
import torch

import fulmen
from ft_helpers import CausalLM, token_loader
from fulmen.callbacks import ModelCheckpoint
from fulmen.errors import FulmenCheckpointError, FulmenConfigError
from fulmen.finetune import TrainableCheckpoint, base_fingerprint, trainable_state_dict


def trainer(steps, callbacks=(), **kwargs):
    return fulmen.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                          enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def trainable(module):
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def test_lora_changes_only_the_adapters_and_lowers_the_loss(tiny_base):
    fulmen.seed_everything(0)
    module = CausalLM(tiny_base, lora=4)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    adapters = {n for n, p in module.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    val = token_loader(8, offset=64)
    loss_before = trainer(1).validate(module, val, verbose=False)[0]["val_loss"]
    trainer(16).fit(module, token_loader(64))
    loss_after = trainer(1).validate(module, val, verbose=False)[0]["val_loss"]
    after = dict(module.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= adapters
    assert any("lora_B" in n for n in changed)  # B starts at zero: the adapters did learn
    assert loss_after < loss_before - 0.05


@pytest.fixture(scope="module")
def lora_runs(tiny_base, tmp_path_factory):
    """An uninterrupted 8-step LoRA run writing trainable-only checkpoints at steps 4 and 8,
    and the same run writing full checkpoints."""
    root = tmp_path_factory.mktemp("lora")
    out = {}
    for name, extra in (("small", [TrainableCheckpoint()]), ("full", [])):
        fulmen.seed_everything(0)
        module = CausalLM(tiny_base, lora=4)
        saver = ModelCheckpoint(dirpath=root / name, every_n_train_steps=4, save_top_k=-1)
        trainer(8, [*extra, saver]).fit(module, token_loader(64))
        out[name] = (module, sorted((root / name).glob("*.ckpt"), key=lambda p: p.stat().st_mtime))
    return out


def test_trainable_checkpoint_is_small_and_marked(lora_runs):
    (small, small_files), (_, full_files) = lora_runs["small"], lora_runs["full"]
    assert len(small_files) == len(full_files) == 2
    for small_file, full_file in zip(small_files, full_files):
        assert small_file.stat().st_size < full_file.stat().st_size / 10
    checkpoint = torch.load(small_files[0], weights_only=True)
    assert set(checkpoint["state_dict"]) == set(trainable(small))
    assert checkpoint["frozen_base"]["hash"] == base_fingerprint(small)["hash"]
    assert "optimizer_states" in checkpoint and "loops" in checkpoint


def test_trainable_checkpoint_resumes_exactly(lora_runs, tiny_base):
    reference, files = lora_runs["small"]
    fulmen.seed_everything(123)  # other adapter init: everything must come from the checkpoint
    module = CausalLM(tiny_base, lora=4)
    trainer(8, [TrainableCheckpoint()]).fit(module, token_loader(64), ckpt_path=str(files[0]))
    expected, got = trainable(reference), trainable(module)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    # The frozen base is the pretrained model, untouched.
    assert all(torch.equal(a, b) for (n, a), b in zip(reference.state_dict().items(), module.state_dict().values())
               if n not in expected)


def test_wrong_base_is_refused_with_what_differs(lora_runs, other_base):
    _, files = lora_runs["small"]
    module = CausalLM(other_base, lora=4)
    with pytest.raises(FulmenCheckpointError, match=r"different frozen base.*different values"):
        trainer(8, [TrainableCheckpoint()]).fit(module, token_loader(64), ckpt_path=str(files[0]))


def test_wrong_adapters_are_refused(lora_runs, tiny_base):
    _, files = lora_runs["small"]
    fulmen.seed_everything(0)
    module = CausalLM(tiny_base)  # no adapters: the base is all trainable, the fingerprint differs
    with pytest.raises(FulmenCheckpointError, match="different frozen base"):
        trainer(8, [TrainableCheckpoint()]).fit(module, token_loader(64), ckpt_path=str(files[0]))


def test_nothing_trainable_is_an_error(tiny_base, tmp_path):
    module = CausalLM(tiny_base, lora=2)
    run = trainer(1, [TrainableCheckpoint()])
    run.fit(module, token_loader(8))
    for p in module.parameters():
        p.requires_grad_(False)
    with pytest.raises(FulmenConfigError, match="no parameter of the model requires gradients"):
        run.save_checkpoint(tmp_path / "x.ckpt")


def test_save_after_fit_is_trainable_only(tiny_base, tmp_path):
    module = CausalLM(tiny_base, lora=2)
    run = trainer(1, [TrainableCheckpoint()])
    run.fit(module, token_loader(8))
    run.save_checkpoint(tmp_path / "final.ckpt")  # between stages: the callback still applies
    checkpoint = torch.load(tmp_path / "final.ckpt", weights_only=True)
    assert "frozen_base" in checkpoint and set(checkpoint["state_dict"]) == set(trainable(module))


def test_trainable_state_dict_keeps_trainable_parameters_only(tiny_base):
    module = CausalLM(tiny_base, lora=2)
    state = trainable_state_dict(module)
    assert state and all("lora_" in k for k in state)


class FrozenBatchNormNet(fulmen.Module):
    """A frozen backbone with a BatchNorm left in train mode (its running statistics change
    while its parameters stay) under a trainable head."""

    def __init__(self, backbone_seed: int = 0, head_seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(backbone_seed)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8))
        self.backbone.requires_grad_(False)
        torch.manual_seed(head_seed)
        self.head = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def regression_loader():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=generator)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    return torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)


def test_frozen_batch_norm_statistics_are_saved_and_resume_exactly(tmp_path):
    reference = FrozenBatchNormNet()
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    trainer(6, [TrainableCheckpoint(), saver]).fit(reference, regression_loader())
    checkpoint = torch.load(tmp_path / "step=3.ckpt", weights_only=True)
    assert "backbone.1.running_mean" in checkpoint["state_dict"]  # the statistics moved: they are saved
    assert "backbone.0.weight" not in checkpoint["state_dict"]  # the frozen parameters are not
    assert set(checkpoint["frozen_base"]["tensors"]) == {"backbone.0.weight", "backbone.0.bias",
                                                         "backbone.1.weight", "backbone.1.bias"}

    resumed = FrozenBatchNormNet(head_seed=1)  # other head: it must come from the checkpoint
    trainer(6, [TrainableCheckpoint()]).fit(resumed, regression_loader(), ckpt_path=str(tmp_path / "step=3.ckpt"))
    expected, got = reference.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[n], got[n]) for n in expected), [n for n in expected if not torch.equal(expected[n], got[n])]

    with pytest.raises(FulmenCheckpointError, match=r"different frozen base.*backbone\.0\.weight: different values"):
        trainer(6, [TrainableCheckpoint()]).fit(FrozenBatchNormNet(backbone_seed=1), regression_loader(),
                                               ckpt_path=str(tmp_path / "step=3.ckpt"))


def test_fingerprint_hashes_the_float64_bytes_without_numpy():
    import hashlib
    import subprocess
    import sys

    from fulmen.finetune.trainable_checkpoint import _value_digest

    values = torch.randn(5, 3, dtype=torch.bfloat16)
    expected = hashlib.sha256(values.to(torch.float64).numpy().tobytes()).hexdigest()[:16]
    assert _value_digest(values) == expected  # the digests of checkpoints written before stay valid
    code = (
        "import sys\n"
        "class NoNumpy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy' or name.startswith('numpy.'):\n"
        "            raise ModuleNotFoundError('numpy is blocked in this test', name=name)\n"
        "sys.meta_path.insert(0, NoNumpy())\n"
        "import torch\n"
        "from fulmen.finetune import base_fingerprint\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Linear(100, 100).requires_grad_(False)\n"
        "print(base_fingerprint(model)['hash'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    torch.manual_seed(0)
    model = torch.nn.Linear(100, 100).requires_grad_(False)
    assert run.stdout.strip() == base_fingerprint(model)["hash"]
