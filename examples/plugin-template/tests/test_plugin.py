"""The package as a user meets it: installed, discovered, and used by name."""

import json
import subprocess
import sys
from importlib import metadata

import torch
from torch.utils.data import DataLoader, TensorDataset

import fulmen
from fulmen_plugin_template.logger import read_metrics

NAMES = {
    "strategy": ["timed_single_device"],
    "precision": ["32-tf32"],
    "logger": ["jsonl"],
    "callback": ["grad_norm"],
}


class Regression(fulmen.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_names_are_registered_by_this_distribution(fulmen_registry):
    for kind, names in NAMES.items():
        for name in names:
            entry = fulmen_registry.get(kind, name)
            assert (entry.plugin, entry.distribution) == ("template", "fulmen-plugin-template")


def test_fulmen_plugins_lists_it_as_loaded():
    listing = subprocess.run([sys.executable, "-m", "fulmen", "plugins", "--json"], capture_output=True, text=True,
                             check=True).stdout
    row = next(r for r in json.loads(listing)["plugins"] if r["name"] == "template")
    assert row["status"] == "loaded", row
    assert row["version"] == metadata.version("fulmen-plugin-template")
    assert row["requirement"] == "fulmen<0.2,>=0.1"
    assert row["registers"] == NAMES


def test_a_trainer_uses_all_four_by_name(tmp_path):
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = fulmen.Trainer(
        accelerator="cpu", strategy="timed_single_device", precision="32-tf32", logger="jsonl",
        callbacks=["grad_norm"], max_epochs=2, log_every_n_steps=1, default_root_dir=tmp_path,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Regression(), DataLoader(data, batch_size=8))

    assert type(trainer.strategy).__name__ == "TimedSingleDeviceStrategy"
    assert len(trainer.strategy.step_times) == trainer.global_step == 8
    assert trainer.precision == "32-tf32"
    stored = read_metrics(trainer.logger.metrics_file)
    assert sorted(stored) == list(range(1, 9))  # every optimizer step (global_step after it)
    assert all({"loss", "grad_norm"} <= set(row) for row in stored.values())
