"""Fine-tune a pretrained vision transformer with fulmen: linear probe against full fine-tune.

1. *Pretrain*: a tiny ViT (``transformers``' ``ViTModel`` from a local config, or a ``timm``
   ViT with ``--backbone timm:<name>``) is trained from scratch on scikit-learn's bundled
   handwritten digits 0-4 and saved (``save_pretrained``; a safetensors file for timm).
2. *Fine-tune* on the digits 5-9, with the encoder loaded back through the real loader
   (``ViTModel.from_pretrained(path)``; ``timm.create_model(..., pretrained=True)`` on the
   file) and a new head:
   - linear probe: the encoder stays frozen, only the head trains;
   - full fine-tune: the head trains alone for ``--unfreeze-at`` epochs, then the encoder is
     unfrozen into the optimizer with layer-wise learning-rate decay
     (``fulmen.finetune.unfreeze_with_layer_decay``, a ``BaseFinetuning`` callback), and an
     exponential moving average of the weights (``EMAWeightAveraging``) is what validation
     measures and what the run ends with.

It prints the validation accuracy of both (chance is 0.2) and, with ``--json FILE``, writes
them there. Everything is offline: the data ships inside scikit-learn, the models are built
from configs. ``nox -s finetune_vision`` runs it with short settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Callable, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen.callbacks import BaseFinetuning, EMAWeightAveraging
from fulmen.finetune import layer_decay_param_groups, unfreeze_with_layer_decay

WIDTH, DEPTH, HEADS = 48, 4, 4  # a ViT of ~0.1M parameters on 8x8 images in 2x2 patches


# --------------------------------------------------------------------------- data
def digits(classes: range, seed: int = 0, val_fraction: float = 0.25) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits of ``classes`` as (1, 8, 8) images, labels from 0, split in two."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = torch.isin(torch.tensor(data.target), torch.tensor(list(classes)))
    x = torch.tensor(data.images, dtype=torch.float32)[keep].unsqueeze(1) / 8.0 - 1.0  # pixels 0..16 -> -1..1
    y = torch.tensor(data.target)[keep] - classes.start
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


# --------------------------------------------------------------------------- backbones
# Each backbone kind gives: build() -> encoder, save(encoder, dir), load(dir) -> encoder, and
# features(encoder, images) -> (batch, WIDTH).
class HFViT:
    """``transformers``' ViT encoder; the [CLS] token's final hidden state is the feature."""

    def _config(self):
        from transformers import ViTConfig

        return ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=WIDTH, num_hidden_layers=DEPTH,
                         num_attention_heads=HEADS, intermediate_size=2 * WIDTH, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)

    def build(self) -> nn.Module:
        from transformers import ViTModel

        return ViTModel(self._config(), add_pooling_layer=False)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        encoder.save_pretrained(directory)

    def load(self, directory: Path) -> nn.Module:
        from transformers import ViTModel

        return ViTModel.from_pretrained(directory, add_pooling_layer=False)

    @staticmethod
    def features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder(pixel_values=images).last_hidden_state[:, 0]


class TimmViT:
    """A ``timm`` vision transformer by name, resized to this data (``pretrained=False`` for
    step 1; step 2 loads the saved file through timm's own pretrained-weights path)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kwargs = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                           mlp_ratio=2.0, num_classes=0)

    def build(self) -> nn.Module:
        import timm

        return timm.create_model(self.name, pretrained=False, **self.kwargs)

    def save(self, encoder: nn.Module, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(directory / "model.safetensors"))

    def load(self, directory: Path) -> nn.Module:
        import timm

        overlay = dict(file=str(directory / "model.safetensors"), num_classes=0, input_size=(1, 8, 8))
        return timm.create_model(self.name, pretrained=True, pretrained_cfg_overlay=overlay, **self.kwargs)

    @staticmethod
    def features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encoder(images)


def backbone_kind(spec: str):
    if spec in ("vit", "hf", "transformers"):
        return HFViT()
    if spec.startswith("timm:") and len(spec) > 5:
        return TimmViT(spec[5:])
    raise SystemExit(f"--backbone {spec!r}: use 'vit' (transformers' ViT) or 'timm:<model name>'")


# --------------------------------------------------------------------------- the module
class DigitsClassifier(fulmen.Module):
    """``backbone`` (the encoder) and ``head``; its optimizer holds the trainable parameters
    in layer-wise decayed groups (the frozen encoder is left out until it is unfrozen)."""

    def __init__(self, backbone: nn.Module, features: Callable, lr: float, layer_decay: float = 1.0,
                 weight_decay: float = 0.05) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(WIDTH, 5)
        self.features = features
        self.lr, self.layer_decay, self.weight_decay = lr, layer_decay, weight_decay

    def forward(self, images):
        return self.head(self.features(self.backbone, images))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())

    def configure_optimizers(self):
        groups = layer_decay_param_groups(self, self.lr, self.layer_decay, weight_decay=self.weight_decay)
        return torch.optim.AdamW(groups)


class UnfreezeWithLayerDecay(BaseFinetuning):
    """The encoder frozen until ``unfreeze_at`` (``None``: for good, a linear probe), then added
    to the optimizer one group per layer at ``lr * layer_decay ** (layers above it)``."""

    def __init__(self, unfreeze_at, lr: float, layer_decay: float, weight_decay: float = 0.05) -> None:
        super().__init__()
        self.unfreeze_at, self.lr, self.layer_decay, self.weight_decay = unfreeze_at, lr, layer_decay, weight_decay

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == self.unfreeze_at:
            unfreeze_with_layer_decay(pl_module.backbone, optimizer, pl_module, self.lr, self.layer_decay,
                                      weight_decay=self.weight_decay)


# --------------------------------------------------------------------------- the stages
def _trainer(root: Path, epochs: int, callbacks=()) -> fulmen.Trainer:
    return fulmen.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=list(callbacks), default_root_dir=root,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0)


def _loaders(classes: range, batch_size: int):
    train, val = digits(classes)
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=256)


def pretrain(kind, directory: Path, root: Path, epochs: int, batch_size: int) -> Tuple[float, nn.Module]:
    """Train encoder + head on digits 0-4, save the encoder; its accuracy and the encoder."""
    fulmen.seed_everything(0)
    module = DigitsClassifier(kind.build(), kind.features, lr=3e-3)
    train, val = _loaders(range(0, 5), batch_size)
    trainer = _trainer(root / "pretrain", epochs)
    trainer.fit(module, train, val)
    kind.save(module.backbone, directory)
    return float(trainer.callback_metrics["val_acc"]), module.backbone


def finetune(kind, directory: Path, root: Path, epochs: int, batch_size: int, full: bool, lr: float,
             layer_decay: float, unfreeze_at: int, ema_decay: float) -> float:
    fulmen.seed_everything(1)
    module = DigitsClassifier(kind.load(directory), kind.features, lr=lr)
    callbacks = [UnfreezeWithLayerDecay(unfreeze_at if full else None, lr, layer_decay)]
    if full:
        callbacks.append(EMAWeightAveraging(decay=ema_decay, warmup=True))
    train, val = _loaders(range(5, 10), batch_size)
    trainer = _trainer(root / ("full" if full else "probe"), epochs, callbacks)
    trainer.fit(module, train, val)
    # After fit the module holds the EMA weights (full) or the trained head (probe).
    return float(trainer.validate(module, val, verbose=False)[0]["val_acc"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit",
                        help="'vit' (transformers) or 'timm:<name>', e.g. timm:vit_tiny_patch16_224")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs, for the probe and the full run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="the head's learning rate (the top layer's)")
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--unfreeze-at", type=int, default=1,
                        help="epoch at which the full fine-tune unfreezes the encoder")
    parser.add_argument("--ema-decay", type=float, default=0.98)
    parser.add_argument("--root", default=None,
                        help="where the pretrained encoder and run files go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the accuracies to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # tiny model: threads cost more than they give
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # from_pretrained's notes about unused weights
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    kind = backbone_kind(args.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        directory = root / "pretrained"
        pretrain_acc, _ = pretrain(kind, directory, root, args.pretrain_epochs, args.batch_size)
        print(f"pretrained on digits 0-4: val accuracy {pretrain_acc:.3f}; saved to {directory}")
        common = dict(kind=kind, directory=directory, root=root, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, layer_decay=args.layer_decay, unfreeze_at=args.unfreeze_at, ema_decay=args.ema_decay)
        probe = finetune(full=False, **common)
        print(f"digits 5-9, linear probe (encoder frozen):          val accuracy {probe:.3f}")
        full = finetune(full=True, **common)
        print(f"digits 5-9, full fine-tune (layer decay {args.layer_decay}, EMA): val accuracy {full:.3f}"
              "  (chance 0.200)")
    result = {"backbone": args.backbone, "pretrain_acc": pretrain_acc, "linear_probe_acc": probe,
              "full_finetune_acc": full}
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
