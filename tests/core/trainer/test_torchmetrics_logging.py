"""``self.log(name, metric)`` with a torchmetrics ``Metric``: computed at the epoch end over
all the epoch's updates, reset between epochs, its forward value on steps, members of a
``MetricCollection`` through ``log_dict``, and its state carried through a mid-epoch
checkpoint so the resumed epoch ends with the value of the uninterrupted run."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torchmetrics = pytest.importorskip("torchmetrics", reason="torchmetrics is optional; pip install torchmetrics")

import fulmen  # noqa: E402
from fulmen.callbacks.model_checkpoint import ModelCheckpoint  # noqa: E402
from fulmen.errors import FulmenUserCodeError  # noqa: E402
from helpers import quiet_trainer  # noqa: E402
from torchmetrics_helpers import Classifier, EpochValues, classification_loader, hand_accuracy  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def trainer_for(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("log_every_n_steps", 1)
    return quiet_trainer(tmp_path, **kwargs)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_epoch_value_is_the_accuracy_over_the_epoch_and_resets_between_epochs(tmp_path):
    logger = fulmen.loggers.CSVLogger(tmp_path, name="acc")
    epochs = EpochValues("train_acc_epoch")
    model = Classifier()
    trainer = trainer_for(tmp_path, max_epochs=2, logger=logger, callbacks=[epochs])
    trainer.fit(model, classification_loader())  # 6 batches of 16 per epoch

    first, second = (hand_accuracy(model.seen["train"][e]) for e in (0, 1))
    over_both = hand_accuracy(model.seen["train"][0] + model.seen["train"][1])
    assert second != pytest.approx(over_both), "the data must tell a reset from no reset"
    assert epochs.values == {0: pytest.approx(first), 1: pytest.approx(second)}

    rows = read_csv(Path(logger.log_dir) / "metrics.csv")
    epoch_rows = [float(r["train_acc_epoch"]) for r in rows if r.get("train_acc_epoch")]
    assert epoch_rows == [pytest.approx(first), pytest.approx(second)]
    # on_step: each batch's own accuracy (the metric's forward value), under the _step name
    step_rows = [float(r["train_acc_step"]) for r in rows if r.get("train_acc_step")]
    batches = model.seen["train"][0] + model.seen["train"][1]
    assert step_rows == [pytest.approx(hand_accuracy([pair])) for pair in batches]
    assert step_rows == pytest.approx(model.forward_values)
    # the Metric is empty again after the last epoch end (Lightning resets it there)
    assert not model.train_acc.update_called


def test_update_only_metric_logs_its_epoch_value(tmp_path):
    model = Classifier(train_log={"on_step": False, "on_epoch": True}, use_update=True)
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(model, classification_loader())
    assert trainer.logged_metrics["train_acc"] == pytest.approx(hand_accuracy(model.seen["train"][0]))
    assert "train_acc_step" not in trainer.logged_metrics


def test_validation_metric_leaves_the_sanity_check_out(tmp_path):
    model = Classifier(train_log={"on_step": False, "on_epoch": True})
    trainer = trainer_for(tmp_path, max_epochs=1, num_sanity_val_steps=2)
    trainer.fit(model, classification_loader(), classification_loader(64, seed=1))
    assert len(model.seen["sanity"][0]) == 2
    assert trainer.callback_metrics["val_acc"].item() == pytest.approx(hand_accuracy(model.seen["val"][0]))
    metrics = trainer.validate(model, classification_loader(64, seed=1), verbose=False)
    assert metrics[0]["val_acc"] == pytest.approx(hand_accuracy(model.seen["val"][0]))


class CollectionLogger(Classifier):
    def __init__(self):
        super().__init__()
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        self.collection = MetricCollection(
            {"micro": MulticlassAccuracy(num_classes=4, average="micro"),
             "macro": MulticlassAccuracy(num_classes=4, average="macro")},
            prefix="train_",
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.seen["train"][self.current_epoch].append((logits.argmax(1).clone(), y.clone()))
        self.collection(logits.argmax(1), y)
        self.log_dict(self.collection, on_step=False, on_epoch=True)
        return torch.nn.functional.cross_entropy(logits, y)

    def on_train_epoch_end(self):
        # a value computed by hand from a Metric is an ordinary tensor, as before
        self.log("manual_micro", self.train_acc.compute() if self.train_acc.update_called else torch.tensor(-1.0))


def test_log_dict_of_a_metric_collection(tmp_path):
    model = CollectionLogger()
    trainer = trainer_for(tmp_path, max_epochs=1)
    trainer.fit(model, classification_loader())
    preds = torch.cat([p for p, _ in model.seen["train"][0]])
    target = torch.cat([t for _, t in model.seen["train"][0]])
    macro = sum((preds[target == c] == c).float().mean().item() for c in target.unique()) / len(target.unique())
    assert trainer.logged_metrics["train_micro"] == pytest.approx(hand_accuracy(model.seen["train"][0]))
    assert trainer.logged_metrics["train_macro"] == pytest.approx(macro)
    assert trainer.logged_metrics["manual_micro"] == -1.0


class BadLogs(Classifier):
    def __init__(self, what):
        super().__init__()
        self.what = what

    def training_step(self, batch, batch_idx):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        x, y = batch
        logits = self(x)
        if self.what == "collection":
            self.log("c", MetricCollection([self.train_acc]))
        elif self.what == "vector":
            if not hasattr(self, "per_class"):
                self.per_class = MulticlassAccuracy(num_classes=4, average=None)
            self.per_class.update(logits.argmax(1), y)
            self.log("per_class", self.per_class, on_step=False, on_epoch=True)
        elif self.what == "mixed":
            self.log("m", self.train_acc if batch_idx == 0 else 1.0)
        return torch.nn.functional.cross_entropy(logits, y)


@pytest.mark.parametrize(("what", "message"), [
    ("collection", "log_dict"),
    ("vector", r"shape \(4,\)"),
    ("mixed", "one kind of value"),
])
def test_bad_metric_logging_is_a_clear_error(tmp_path, what, message):
    trainer = trainer_for(tmp_path, max_epochs=1)
    with pytest.raises(FulmenUserCodeError, match=message):
        trainer.fit(BadLogs(what), classification_loader())


def _fit_with_checkpoints(tmp_path, ckpt_path=None, every=4):
    epochs = EpochValues("train_acc_epoch")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=every, save_top_k=-1)
    model = Classifier()
    trainer = trainer_for(tmp_path, max_epochs=2, callbacks=[epochs, checkpoint], enable_checkpointing=True)
    trainer.fit(model, classification_loader(), ckpt_path=ckpt_path)
    return model, epochs.values


def test_mid_epoch_resume_gives_the_uninterrupted_epoch_value(tmp_path):
    model, uninterrupted = _fit_with_checkpoints(tmp_path / "first")
    mid_first = tmp_path / "first" / "ckpts" / "epoch=0-step=4.ckpt"  # after 4 of 6 batches
    mid_second = tmp_path / "first" / "ckpts" / "epoch=1-step=8.ckpt"  # after 2 of 6 batches
    assert mid_first.exists() and mid_second.exists()
    saved = torch.load(mid_first, weights_only=True)
    own = saved["metric_states"]["per_rank"][0]
    assert set(own) == {"train_acc", "val_acc"} and own["train_acc"]["update_count"] == 4

    resumed, values = _fit_with_checkpoints(tmp_path / "second", ckpt_path=str(mid_first))
    assert values == uninterrupted  # exactly, not approximately
    # the resumed run saw only the last 2 batches of epoch 0: without the saved state its
    # epoch value would be the accuracy over those alone
    assert len(resumed.seen["train"][0]) == 2
    assert uninterrupted[0] != pytest.approx(hand_accuracy(resumed.seen["train"][0]))

    _, values = _fit_with_checkpoints(tmp_path / "third", ckpt_path=str(mid_second))
    assert values[1] == uninterrupted[1]


def test_a_run_without_metrics_does_not_import_torchmetrics(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
import fulmen
from helpers import BoringModule, loader, quiet_trainer
trainer = quiet_trainer({str(tmp_path)!r}, max_epochs=1, num_sanity_val_steps=1)
trainer.fit(BoringModule(), loader(32), loader(16))
trainer.save_checkpoint({str(tmp_path / "x.ckpt")!r})
assert "torchmetrics" not in sys.modules, sorted(m for m in sys.modules if "torchmetrics" in m)
print("clean")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def _launch_ddp(tmp_path, out, ckpt_path=None):
    cmd = [sys.executable, str(Path(__file__).parent / "torchmetrics_ddp_script.py"), "--out", str(out)]
    if ckpt_path is not None:
        cmd += ["--ckpt-path", str(ckpt_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    return [json.loads((out / f"rank_{r}.json").read_text()) for r in range(2)]


def test_two_ranks_log_the_accuracy_over_the_union_and_resume_per_rank(tmp_path):
    ranks = _launch_ddp(tmp_path, tmp_path / "first")
    for epoch in ("0", "1"):
        local = [[(torch.tensor(p), torch.tensor(t)) for p, t in r["seen"][epoch]] for r in ranks]
        union = hand_accuracy(local[0] + local[1])
        for r in ranks:
            assert r["epoch_values"][epoch] == pytest.approx(union)  # torchmetrics synced in compute()
        # each rank saw different samples: its own accuracy is not the logged value
        assert any(hand_accuracy(pairs) != pytest.approx(union) for pairs in local)
    assert ranks[0]["seen"]["0"] != ranks[1]["seen"]["0"]

    mid = tmp_path / "first" / "ckpts" / "epoch=0-step=4.ckpt"  # 4 of 6 batches per rank
    saved = torch.load(mid, weights_only=True)["metric_states"]["per_rank"]
    assert len(saved) == 2 and not torch.equal(saved[0]["train_acc"]["state"]["tp"], saved[1]["train_acc"]["state"]["tp"])
    resumed = _launch_ddp(tmp_path, tmp_path / "second", ckpt_path=mid)
    for before, after in zip(ranks, resumed):
        assert len(after["seen"]["0"]) == 2  # only the batches after the checkpoint ran again
        assert after["epoch_values"] == before["epoch_values"]
