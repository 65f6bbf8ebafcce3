"""A miniature DCGAN (transposed-convolution generator, convolutional discriminator) on
8x8 synthetic "images" in a Fabric loop with two models and two optimizers (Lightning 2.x).

Exercises: ``from lightning.fabric import Fabric, seed_everything``, fabric.setup called
once per model/optimizer pair, fabric.setup_dataloaders, fabric.backward for two losses,
fabric.to_device, fabric.save of both models, rank_zero_only from
lightning.fabric.utilities, fabric.print.

Run: python fabric_dcgan.py [OUTPUT_DIR]   (or set CORPUS_OUT)
"""

import os
import sys
import tempfile

import torch
from lightning.fabric import Fabric, seed_everything
from lightning.fabric.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LATENT = 8


def real_images(n, seed=0):
    """A bright square at a random place on a dark background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    images = -torch.ones(n, 1, 8, 8)
    corners = torch.randint(0, 5, (n, 2), generator=g)
    for i, (r, c) in enumerate(corners.tolist()):
        images[i, 0, r:r + 4, c:c + 4] = 1.0
    return images


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(LATENT, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(16, 1, 4, 2, 1, bias=False), nn.Tanh(),  # 8x8
        )

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 4x4
            nn.Conv2d(16, 1, 4, 1, 0, bias=False), nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


@rank_zero_only
def save_samples(fabric, generator, path):
    with torch.no_grad():
        samples = generator(fabric.to_device(torch.randn(16, LATENT, 1, 1)))
    torch.save(samples.cpu(), path)
    return samples


def main(out):
    os.makedirs(out, exist_ok=True)
    seed_everything(17)
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    fabric.launch()

    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(real_images(512)), batch_size=64, shuffle=True))
    generator, discriminator = Generator(), Discriminator()
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    generator, opt_g = fabric.setup(generator, opt_g)
    discriminator, opt_d = fabric.setup(discriminator, opt_d)

    with torch.no_grad():
        initial_saturation = generator(torch.randn(16, LATENT, 1, 1, device=fabric.device)).abs().mean().item()

    bce = nn.BCEWithLogitsLoss()
    d_losses, g_losses = [], []
    for epoch in range(6):
        for (real,) in loader:
            ones = torch.ones(real.size(0), 1, device=fabric.device)
            zeros = torch.zeros_like(ones)
            fake = generator(torch.randn(real.size(0), LATENT, 1, 1, device=fabric.device))

            opt_d.zero_grad()
            d_loss = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
            fabric.backward(d_loss)
            opt_d.step()

            opt_g.zero_grad()
            g_loss = bce(discriminator(fake), ones)
            fabric.backward(g_loss)
            opt_g.step()
            d_losses.append(d_loss.item())
            g_losses.append(g_loss.item())
        fabric.print(f"epoch {epoch}: d_loss {d_losses[-1]:.3f} g_loss {g_losses[-1]:.3f}")

    samples_path = os.path.join(out, "samples.pt")
    save_samples(fabric, generator, samples_path)
    fabric.save(os.path.join(out, "dcgan.ckpt"), {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d})

    samples = torch.load(samples_path, weights_only=True)
    assert samples.shape == (16, 1, 8, 8), samples.shape
    assert all(torch.isfinite(torch.tensor(v)) for v in d_losses + g_losses), "a loss went non-finite"
    # Real pixels are exactly -1 or +1. An initialised generator draws values near 0
    # (tanh of small weights); a trained one must have learnt to saturate like the data.
    saturation = samples.abs().mean().item()
    assert saturation > initial_saturation + 0.2, f"mean |pixel| {initial_saturation:.3f} -> {saturation:.3f}"
    loaded = fabric.load(os.path.join(out, "dcgan.ckpt"))
    assert set(loaded) == {"generator", "discriminator", "opt_g", "opt_d"}, set(loaded)
    fabric.print(f"CORPUS_OK fabric_dcgan: mean |pixel| {initial_saturation:.3f} -> {saturation:.3f}, final d_loss {d_losses[-1]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CORPUS_OUT") or tempfile.mkdtemp())
