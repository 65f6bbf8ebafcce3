"""The real multi-process launches of the FSDP tests, shared by the tests that check them.

A launch costs seconds (each process imports torch, the group forms), so every launch runs
several checks' worth of training and the tests read its outputs. Session scope: each
launch happens once, whichever tests ask for it.

    trainer_runs  2 processes: "equiv" (per-block units, activation checkpointing,
                  meta-device init, accumulation, clipping, sharded checkpoints, a full
                  one at the end) and "ref" (strategy="fsdp" by name, dropout, shuffling:
                  the uninterrupted run of the kill test)
    reshard_to_1  1 process: resume equiv's 2-rank sharded last.ckpt, save full + sharded;
                  a short bf16-true run
    reshard_to_2  2 processes: resume the 1-rank sharded checkpoint, and equiv's full file
    kill_resume   2 processes killed by SIGKILL after a checkpoint, then resumed from "last"
    fabric_run    2 processes: the Fabric phases of fsdp_fabric_script.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fsdp_helpers import HERE, PYTHON, read_json, run  # noqa: E402

TRAINER_SCRIPT = HERE / "fsdp_trainer_script.py"
FABRIC_SCRIPT = HERE / "fsdp_fabric_script.py"
KILL_RUN = {"strategy": "fsdp", "epochs": 3, "dropout": 0.1, "shuffle": True, "every": 2}


def launch_trainer(root: Path, name: str, runs, devices: int = 2, expect_code: int = 0):
    proc = run([PYTHON, TRAINER_SCRIPT, "--out", root, "--devices", devices, "--runs", json.dumps(runs)], root, name)
    if expect_code is not None:
        assert proc.returncode == expect_code, proc.log[-6000:]
    return proc


@pytest.fixture(scope="session")
def fsdp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fsdp")


@pytest.fixture(scope="session")
def trainer_runs(fsdp_root):
    root = fsdp_root / "trainer"
    root.mkdir()
    runs = [
        {"name": "equiv", "meta_init": True, "accumulate": 2, "clip": 0.5, "final_full": str(root / "equiv_final.ckpt")},
        {**KILL_RUN, "name": "ref", "final_full": str(root / "ref_final.ckpt")},
    ]
    proc = launch_trainer(root, "trainer", runs)
    return root, proc


@pytest.fixture(scope="session")
def reshard_to_1(trainer_runs):
    source, _ = trainer_runs
    root = source.parent / "reshard_to_1"
    root.mkdir()
    # One process over the same global batches: batch 16 instead of 2 x 8.
    runs = [{"name": "from_2", "batch_size": 16, "accumulate": 2, "clip": 0.5,
             "ckpt_path": str(source / "equiv" / "ckpts" / "last.ckpt"),
             "final_full": str(root / "from_2_final.ckpt"), "final_sharded": str(root / "ws1.ckpt")},
            # bf16-true: the module itself in bfloat16, checkpoints in bfloat16
            {"name": "bf16_true", "precision": "bf16-true", "epochs": 1, "batch_size": 16,
             "final_sharded": str(root / "bf16_true.ckpt")}]
    proc = launch_trainer(root, "reshard_to_1", runs, devices=1)
    return root, proc


@pytest.fixture(scope="session")
def reshard_to_2(trainer_runs, reshard_to_1):
    source, _ = trainer_runs
    single, _ = reshard_to_1
    root = source.parent / "reshard_to_2"
    root.mkdir()
    runs = [
        {"name": "from_1", "accumulate": 2, "clip": 0.5, "ckpt_path": str(single / "ws1.ckpt"),
         "final_full": str(root / "from_1_final.ckpt")},
        {"name": "from_full", "accumulate": 2, "clip": 0.5, "ckpt_path": str(source / "equiv_final.ckpt"),
         "final_full": str(root / "from_full_final.ckpt")},
    ]
    proc = launch_trainer(root, "reshard_to_2", runs)
    return root, proc


@pytest.fixture(scope="session")
def kill_resume(fsdp_root):
    root = fsdp_root / "kill"
    root.mkdir()
    killed = launch_trainer(root, "killed", [{**KILL_RUN, "name": "run", "kill_at_step": 5}], expect_code=None)
    after_kill = sorted(p.name for p in (root / "run" / "ckpts").iterdir())
    resumed = launch_trainer(root, "resumed", [{**KILL_RUN, "name": "run", "ckpt_path": "last",
                                                "final_full": str(root / "resumed_final.ckpt")}])
    return root, killed, after_kill, resumed


@pytest.fixture(scope="session")
def fabric_run(fsdp_root):
    root = fsdp_root / "fabric"
    root.mkdir()
    proc = run([PYTHON, FABRIC_SCRIPT, root], root, "fabric")
    assert proc.returncode == 0, proc.log[-6000:]
    return [read_json(root / f"fabric_rank_{r}.json") for r in range(2)], root
