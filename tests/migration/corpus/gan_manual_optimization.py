"""A one-dimensional GAN trained with manual optimization and two optimizers, written
against the ``pytorch_lightning`` package name (Lightning 2.x).

Exercises: ``import pytorch_lightning as pl``, automatic_optimization = False,
``opt_g, opt_d = self.optimizers()``, toggle_optimizer/untoggle_optimizer,
manual_backward, opt.step()/opt.zero_grad(), configure_optimizers returning two
optimizers, rank_zero_only, self.log_dict, max_steps.

Run: python gan_manual_optimization.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TARGET_MEAN, TARGET_STD = 3.0, 0.5
NOISE = 4


@rank_zero_only
def report(message):
    print(message)


class GAN(pl.LightningModule):
    def __init__(self, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(NOISE, 16), nn.ReLU(), nn.Linear(16, 1))
        self.discriminator = nn.Sequential(nn.Linear(1, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.g_steps = 0
        self.d_steps = 0

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        bce = nn.functional.binary_cross_entropy_with_logits
        z = torch.randn(real.size(0), NOISE, device=self.device)

        self.toggle_optimizer(opt_d)
        fake = self(z).detach()
        d_loss = bce(self.discriminator(real), torch.ones_like(real)) + bce(self.discriminator(fake), torch.zeros_like(real))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.d_steps += 1

        self.toggle_optimizer(opt_g)
        g_loss = bce(self.discriminator(self(z)), torch.ones_like(real))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        # while opt_g is toggled the discriminator must not collect gradients
        assert all(p.grad is None or not p.requires_grad for p in self.discriminator.parameters())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.g_steps += 1

        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True)

    def configure_optimizers(self):
        lr = self.hparams.lr
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        return [opt_g, opt_d]


def main(out):
    pl.seed_everything(11)
    real = TARGET_MEAN + TARGET_STD * torch.randn(2048, 1)
    loader = DataLoader(TensorDataset(real), batch_size=64, shuffle=True)

    model = GAN()
    with torch.no_grad():
        before = model(torch.randn(1000, NOISE)).mean().item()
    trainer = pl.Trainer(
        max_steps=600,  # counts optimizer steps: two per batch here
        max_epochs=20,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(model, loader)

    with torch.no_grad():
        after = model(torch.randn(1000, NOISE)).mean().item()
    assert model.g_steps == model.d_steps == 300, (model.g_steps, model.d_steps)
    assert trainer.global_step == 600, trainer.global_step
    assert abs(after - TARGET_MEAN) < 0.5 * abs(before - TARGET_MEAN), f"generator mean {before:.3f} -> {after:.3f}"
    assert "g_loss" in trainer.callback_metrics and "d_loss" in trainer.callback_metrics
    report(f"CORPUS_OK gan_manual_optimization: generator mean {before:.3f} -> {after:.3f} (target {TARGET_MEAN})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
