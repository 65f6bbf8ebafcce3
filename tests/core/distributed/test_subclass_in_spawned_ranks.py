"""Under ``ddp_spawn`` every rank runs the caller's own Trainer/Fabric subclass, rebuilt from
the arguments its constructor was called with (its own signature), not the base class.

The subclasses live in spawn_subclasses.py: the workers import them by module and name. A
subclass defined inside a function cannot be imported there, and is refused up front with
the fix.
"""

from __future__ import annotations

import json
import os

import pytest

import fulmen
from fulmen.errors import FulmenConfigError
from helpers import BoringModule, loader
from spawn_subclasses import MarkerTrainer, PrintingModule, SeedOffsetFabric, record_rank

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0)


def test_trainer_subclass_with_its_own_constructor_runs_in_both_spawned_ranks(tmp_path):
    trainer = MarkerTrainer(tmp_path, tag="mine", strategy="ddp_spawn", devices=2, accelerator="cpu", max_epochs=2, **QUIET)
    trainer.fit(PrintingModule(), loader(32, batch_size=8))  # 32 samples / 2 ranks / 8: 2 steps an epoch

    assert trainer.global_step == 4  # rank 0's progress, mirrored into the calling process
    records = {}
    for rank in range(2):
        path = tmp_path / f"rank_{rank}.jsonl"
        assert path.exists(), f"rank {rank} did not run MarkerTrainer.print (the base Trainer ran there?)"
        records[rank] = [json.loads(line) for line in path.read_text().splitlines()]
    for rank, lines in records.items():
        assert [r["text"] for r in lines] == ["epoch 0 step 0", "epoch 1 step 2"]
        assert {(r["class"], r["tag"], r["rank"], r["world_size"]) for r in lines} == {("MarkerTrainer", "mine", rank, 2)}
    pids = {rank: {r["pid"] for r in lines} for rank, lines in records.items()}
    assert len(pids[0]) == len(pids[1]) == 1 and pids[0] != pids[1]
    assert os.getpid() not in pids[0] | pids[1], "the markers must come from the spawned ranks"


def test_fabric_subclass_is_what_launch_hands_each_spawned_rank(tmp_path):
    fabric = SeedOffsetFabric("fab", out_dir=tmp_path, strategy="ddp_spawn", devices=2, accelerator="cpu")
    assert fabric.launch(record_rank, 40) == "SeedOffsetFabric"  # rank 0's return value

    ranks = [json.loads((tmp_path / f"fabric_rank_{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(ranks):
        assert record["class"] == "SeedOffsetFabric" and record["tag"] == "fab"
        assert record["rank"] == rank and record["world_size"] == 2 and record["sum"] == 3.0
        # the overridden seed_everything ran in that rank
        assert record["seed"] == record["torch_initial_seed"] == 40 + rank
    assert len({r["pid"] for r in ranks} | {os.getpid()}) == 3


def test_a_subclass_defined_inside_a_function_is_refused_with_the_fix(tmp_path):
    class LocalTrainer(fulmen.Trainer):
        pass

    class LocalFabric(fulmen.Fabric):
        pass

    trainer = LocalTrainer(strategy="ddp_spawn", devices=2, accelerator="cpu", max_epochs=1, **QUIET)
    with pytest.raises(FulmenConfigError) as info:
        trainer.fit(BoringModule(), loader(16, batch_size=8))
    message = str(info.value)
    assert "LocalTrainer" in message and "module level" in message, message

    fabric = LocalFabric(strategy="ddp_spawn", devices=2, accelerator="cpu")
    with pytest.raises(FulmenConfigError, match="LocalFabric.*module level"):
        fabric.launch(record_rank, 0)
    assert not list(tmp_path.iterdir())
