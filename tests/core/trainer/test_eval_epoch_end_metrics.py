"""A callback's ``on_validation_epoch_end``/``on_test_epoch_end`` reads the epoch's
aggregates from ``trainer.callback_metrics``, as Lightning programs do (custom early
stopping, printing the epoch's score)."""

import torch
from helpers import BoringModule, loader, quiet_trainer

import fulmen


class ReadsEpochMetrics(fulmen.Callback):
    def __init__(self):
        self.seen = {}

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.seen.setdefault("val_loss", []).append(float(trainer.callback_metrics["val_loss"]))

    def on_test_epoch_end(self, trainer, pl_module):
        self.seen["test_loss"] = float(trainer.callback_metrics["test_loss"])


def test_epoch_aggregates_are_visible_in_the_epoch_end_hook(tmp_path):
    reader = ReadsEpochMetrics()
    trainer = quiet_trainer(tmp_path, max_epochs=2, logger=False, enable_checkpointing=False, callbacks=[reader])
    model = BoringModule()
    val = loader(seed=1)
    trainer.fit(model, loader(), val)
    assert len(reader.seen["val_loss"]) == 2
    # the value the hook saw is the epoch's mean, the one fit ended with
    assert reader.seen["val_loss"][-1] == float(trainer.callback_metrics["val_loss"])

    tested = trainer.test(model, dataloaders=loader(seed=2), verbose=False)
    assert reader.seen["test_loss"] == tested[0]["test_loss"]
    x, y = loader(seed=2).dataset.tensors
    with torch.no_grad():
        assert abs(reader.seen["test_loss"] - torch.nn.functional.mse_loss(model(x), y).item()) < 1e-5
