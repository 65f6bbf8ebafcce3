"""``Strategy.teardown()`` ends every fit/validate/test/predict, and the next stage on the same
Trainer sets the environment up again. Under ``strategy="ddp"`` the process group belongs to
the job, not to a stage: after ``fit`` a ``save_checkpoint`` and the user's own collectives
still work, and validate/test synchronise their metrics across the ranks.

This file is also the 2-process script (``python test_teardown_between_stages.py OUT``);
``strategy="ddp"`` re-runs it for rank 1, as ddp_script.py is re-run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for helpers

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import fulmen  # noqa: E402
from fulmen.strategies import SingleDeviceStrategy  # noqa: E402
from helpers import BoringModule, loader, regression_data  # noqa: E402

THIS = Path(__file__).resolve()
RANK0_LAG = 0.5  # seconds rank 0 spends between stages (as writing logs or files would)


class SyncedModule(BoringModule):
    """Logs each evaluation loss twice: all-reduced and this rank's own; notes whether a
    process group is up while each stage runs."""

    def __init__(self) -> None:
        super().__init__()
        self.group_during = {}

    def _note_group(self, stage: str) -> None:
        self.group_during[stage] = dist.get_world_size() if dist.is_initialized() else 0

    def training_step(self, batch, batch_idx):
        self._note_group("fit")
        return super().training_step(batch, batch_idx)

    def _evaluate(self, stage, batch):
        self._note_group(stage)
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log(f"{stage}_loss", loss, sync_dist=True)
        self.log(f"{stage}_local_loss", loss)
        self.log(f"{stage}_rank", float(self.trainer.global_rank), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)


def ddp_main(out: Path) -> None:
    fulmen.seed_everything(0)
    trainer = fulmen.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
    model = SyncedModule()

    def between_stages():
        # The ranks reach the next stage's rendezvous at different times, as in real jobs
        # where rank 0 alone writes logs and checkpoints: here rank 0 is the late one.
        if trainer.global_rank == 0:
            time.sleep(RANK0_LAG)
        return dist.is_initialized()

    trainer.fit(model, loader(32, batch_size=8))
    # What users do right after fit needs the group: a checkpoint (every rank's RNG is
    # gathered into it) and their own collectives.
    trainer.save_checkpoint(out / "after_fit.ckpt")
    total = torch.tensor([float(trainer.global_rank + 1)])
    dist.all_reduce(total)
    up = {"fit": between_stages(), "user_all_reduce": total.item()}
    val = trainer.validate(model, loader(32, batch_size=8), verbose=False)
    up["validate"] = between_stages()
    test = trainer.test(model, loader(32, batch_size=8), verbose=False)
    up["test"] = dist.is_initialized()
    data = regression_data(32)
    with torch.no_grad():  # the loss over every rank's samples, for the all-reduced values
        full_loss = nn.functional.mse_loss(model(data.tensors[0]), data.tensors[1]).item()
    result = {
        "rank": trainer.global_rank,
        "up_after": up,
        "group_during": model.group_during,
        "val": val,
        "test": test,
        "full_loss": full_loss,
        "params": {k: v.flatten().tolist() for k, v in model.state_dict().items()},
    }
    (out / f"rank_{trainer.global_rank}.json").write_text(json.dumps(result))


def test_ddp_group_outlives_each_stage_and_the_next_stage_syncs_again(tmp_path):
    from test_ddp import PYTHON, run

    # a rendezvous that goes wrong fails within 20 s instead of the 30 minute default; the
    # whole launch takes under 10 s when it works
    proc, _ = run([PYTHON, str(THIS), str(tmp_path)], tmp_path, timeout=60, env={"FULMEN_DIST_TIMEOUT": "20"})
    assert proc.returncode == 0, proc.log
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    for rank, r in enumerate(ranks):
        assert r["rank"] == rank
        assert r["up_after"] == {"fit": True, "user_all_reduce": 3.0, "validate": True, "test": True}
        assert r["group_during"] == {"fit": 2, "val": 2, "test": 2}
    assert ranks[0]["params"] == ranks[1]["params"]
    assert (tmp_path / "after_fit.ckpt").is_file()
    for stage in ("val", "test"):
        metrics = [r[stage][0] for r in ranks]
        # each rank evaluated its own half of the data ...
        assert metrics[0][f"{stage}_local_loss"] != metrics[1][f"{stage}_local_loss"]
        # ... and the synchronised values are the same on both ranks: the mean over all data
        for name in (f"{stage}_loss", f"{stage}_rank"):
            assert metrics[0][name] == metrics[1][name], name
        assert metrics[0][f"{stage}_rank"] == 0.5
        assert metrics[0][f"{stage}_loss"] == pytest.approx(ranks[0]["full_loss"], rel=1e-5)


# ------------------------------------------------------------------ one process, counted calls
class CountingStrategy(SingleDeviceStrategy):
    def __init__(self, events) -> None:
        super().__init__()
        self.events = events

    def setup_environment(self) -> None:
        self.events.append("setup_environment")
        super().setup_environment()

    def teardown(self) -> None:
        self.events.append("teardown")
        super().teardown()


class StageNotingModule(BoringModule):
    def __init__(self, events, fail_in_training: bool = False) -> None:
        super().__init__()
        self.events, self.fail_in_training = events, fail_in_training

    def setup(self, stage):
        self.events.append(f"setup:{stage}")

    def teardown(self, stage):
        self.events.append(f"teardown:{stage}")

    def training_step(self, batch, batch_idx):
        if self.fail_in_training:
            raise ValueError("deliberate failure in training_step")
        return super().training_step(batch, batch_idx)


def counting_trainer(events, tmp_path):
    return fulmen.Trainer(strategy=CountingStrategy(events), accelerator="cpu", max_epochs=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          num_sanity_val_steps=0, default_root_dir=tmp_path)


def stage_events(stage):
    return [f"setup:{stage}", f"teardown:{stage}", "teardown"]


def test_teardown_ends_every_stage_and_the_next_stage_sets_up_again(tmp_path):
    events = []
    trainer = counting_trainer(events, tmp_path)
    assert events == ["setup_environment"]  # when the Trainer is built
    model = StageNotingModule(events)
    trainer.fit(model, loader(16, batch_size=8))
    assert events == ["setup_environment", *stage_events("fit")]
    del events[:]
    trainer.validate(model, loader(16, batch_size=8), verbose=False)
    trainer.test(model, loader(16, batch_size=8), verbose=False)
    predictions = trainer.predict(model, loader(16, batch_size=8))
    assert len(predictions) == 2
    assert events == [
        "setup_environment", *stage_events("validate"),
        "setup_environment", *stage_events("test"),
        "setup_environment", *stage_events("predict"),
    ]


def test_teardown_runs_when_training_step_raises(tmp_path):
    events = []
    trainer = counting_trainer(events, tmp_path)
    with pytest.raises(ValueError, match="deliberate failure in training_step"):
        trainer.fit(StageNotingModule(events, fail_in_training=True), loader(16, batch_size=8))
    assert events == ["setup_environment", *stage_events("fit")]
    assert events.count("teardown") == 1
    # the Trainer is usable afterwards: the next stage sets the environment up again
    del events[:]
    trainer.validate(StageNotingModule(events), loader(16, batch_size=8), verbose=False)
    assert events == ["setup_environment", *stage_events("validate")]


if __name__ == "__main__":
    ddp_main(Path(sys.argv[1]))
