"""DeepSpeed ZeRO stage 3 on 2 processes (the Trainer re-runs this script for rank 1): a
model built in ``configure_model`` is partitioned as it is created (``zero.Init``) and
``fulmen.finetune.load_pretrained`` fills each rank's partitions from a safetensors file.
Rank r writes ``<out>/rank_<r>.json``.

The model is plain PyTorch: ``transformers`` 5 models cannot be built inside DeepSpeed
0.19.8's ``zero.Init`` on torch 2.13 (``TypeError: Signature mismatch between
get_new_tensor_fn_for_dtype.<locals>.new_tensor and tensor_pynew``, raised by torch._dynamo).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

import fulmen

FIXED = torch.arange(48).view(3, 16) % 50


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.norm = nn.LayerNorm(24)
        self.hidden = nn.Linear(24, 37)  # odd sizes: partitions end inside a row
        self.out = nn.Linear(37, 50)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(self.norm(self.embed(x)))))


class Probe(fulmen.Module):
    def __init__(self, weights: Path) -> None:
        super().__init__()
        self.weights = weights
        self.net = None

    def configure_model(self):
        from fulmen.finetune import load_pretrained

        self.net = Net()
        self.report = load_pretrained(self.net, self.weights)
        self.partition_numel = sum(p.ds_tensor.numel() for p in self.net.parameters())
        self.total_numel = sum(p.ds_numel for p in self.net.parameters())

    def validation_step(self, batch, batch_idx):
        self.logits = self.net(FIXED).detach()


def save_weights(path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(Net().state_dict(), str(path))


def main(weights: Path, out: Path) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from fulmen_deepspeed import DeepSpeedStrategy

    probe = Probe(weights)
    run = fulmen.Trainer(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=3), logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    run.validate(probe, DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1), verbose=False)
    result = {"bytes_read": probe.report.bytes_read, "tensors": probe.report.tensors,
              "partition_numel": probe.partition_numel, "total_numel": probe.total_numel}
    if run.global_rank == 0:
        from safetensors.torch import load_file

        reference = Net()
        reference.load_state_dict(load_file(str(weights)))
        with torch.no_grad():
            result["logits_max_diff"] = float((reference(FIXED) - probe.logits.float()).abs().max())
    (out / f"rank_{run.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
