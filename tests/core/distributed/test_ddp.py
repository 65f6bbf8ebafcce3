"""DDP for real: 2 processes with gloo on CPU, launched by fulmen, torch.multiprocessing,
torchrun and two simulated nodes; equivalence to one process, failure handling, resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fulmen
from helpers import BoringModule, loader

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "ddp_script.py"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
LAUNCH_TIMEOUT = 180  # seconds a whole launch may take before the test calls it a hang


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd, tmp_path, name="launch", timeout=LAUNCH_TIMEOUT, env=None):
    """Run a launch, keep its log next to the outputs for diagnosis, return (proc, seconds)."""
    log = tmp_path / f"{name}.log"
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                              env={**os.environ, **(env or {})}, cwd=tmp_path)
    proc.log = log.read_text()
    return proc, time.monotonic() - start


def results(out: Path):
    return [json.loads((out / f"rank_{r}.json").read_text()) for r in range(2)]


def single_process_params(epochs=2, accumulate=1, batch_size=16):
    """One process over the same global batches: DistributedSampler without shuffling gives
    rank r the samples r, r+2, ..., so a step's two local batches of 8 are one batch of 16."""
    fulmen.seed_everything(0)
    model = BoringModule()
    trainer = fulmen.Trainer(accelerator="cpu", max_epochs=epochs, accumulate_grad_batches=accumulate, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
    trainer.fit(model, loader(64, batch_size=batch_size))
    return {k: v.flatten() for k, v in model.state_dict().items()}


def assert_equivalent(ranks, reference):
    first = ranks[0]["params"]
    for other in ranks[1:]:
        assert other["params"] == first, "parameters must be identical on every rank"
    for key, value in reference.items():
        assert torch.allclose(torch.tensor(first[key]), value, atol=1e-6), key


def test_ddp_relaunches_script_and_matches_single_process(tmp_path):
    out = tmp_path / "out"
    proc, _ = run([PYTHON, str(SCRIPT), "--out", str(out), "--accumulate", "2"], tmp_path)
    assert proc.returncode == 0, proc.log
    ranks = results(out)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["environment"] == "LocalEnvironment" for r in ranks)
    assert_equivalent(ranks, single_process_params(accumulate=2))
    # 2 epochs x 4 local micro-batches, stepping every 2nd: 4 steps and only 4 all-reduces
    assert all(r["global_step"] == 4 for r in ranks)
    assert all(r["allreduces"] == 4 for r in ranks), "non-stepping micro-batches must skip the all-reduce"
    # sync_dist: sum of (rank + 1) over ranks = 3; epoch mean of ranks 0 and 1 = 0.5
    assert all(r["rank_sum"] == 3.0 and r["rank_mean"] == 0.5 for r in ranks)
    # only rank zero writes: one log version, checkpoints once
    versions = sorted(p.name for p in (out / "fulmen_logs").iterdir())
    assert versions == ["version_0"]
    checkpoints = sorted(p.name for p in (out / "fulmen_logs" / "version_0" / "checkpoints").iterdir())
    assert checkpoints == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]
    assert ranks[0]["best_model_path"] == ranks[1]["best_model_path"]


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_multiprocessing_strategies_match_single_process(tmp_path, strategy):
    out = tmp_path / "out"
    script = tmp_path / "spawn_main.py"
    script.write_text(f"""
import json, sys
sys.path.insert(0, {str(HERE)!r}); sys.path.insert(0, {str(HERE.parents[1])!r})
import fulmen
from ddp_script import CountingModule
from helpers import loader

if __name__ == "__main__":
    fulmen.seed_everything(0)
    trainer = fulmen.Trainer(accelerator="cpu", strategy={strategy!r}, devices=2, max_epochs=2, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = CountingModule()
    trainer.fit(model, loader(64, batch_size=8), loader(32, batch_size=8))
    json.dump({{"params": {{k: v.flatten().tolist() for k, v in model.state_dict().items()}},
               "global_step": trainer.global_step, "rank_mean": float(trainer.callback_metrics["rank_mean"])}},
              open({str(tmp_path / "parent.json")!r}, "w"))
""")
    proc, _ = run([PYTHON, str(script)], tmp_path)
    assert proc.returncode == 0, proc.log
    parent = json.loads((tmp_path / "parent.json").read_text())
    assert parent["global_step"] == 8 and parent["rank_mean"] == 0.5
    # the calling process holds rank 0's trained weights afterwards
    assert_equivalent([parent], single_process_params())


def test_torchrun_launch_is_used_instead_of_fulmen_launching(tmp_path):
    out = tmp_path / "out"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           str(SCRIPT), "--out", str(out)]
    proc, _ = run(cmd, tmp_path)
    assert proc.returncode == 0, proc.log
    ranks = results(out)
    assert all(r["environment"] == "TorchElasticEnvironment" for r in ranks)
    assert_equivalent(ranks, single_process_params())


def test_two_simulated_nodes_form_one_world(tmp_path):
    out = tmp_path / "out"
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
              str(SCRIPT), "--out", str(out), "--devices", "1", "--num-nodes", "2"]
    logs = [open(tmp_path / f"node{n}.log", "w") for n in range(2)]
    procs = [subprocess.Popen([str(BIN / "torchrun"), f"--node_rank={n}", *common], stdout=logs[n],
                              stderr=subprocess.STDOUT, cwd=tmp_path) for n in range(2)]
    try:
        codes = [p.wait(timeout=LAUNCH_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for handle in logs:
            handle.close()
    assert codes == [0, 0], (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
    ranks = results(out)
    assert [r["node_rank"] for r in ranks] == [0, 1] and [r["local_rank"] for r in ranks] == [0, 0]
    assert_equivalent(ranks, single_process_params())


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_raising_rank_ends_the_job_quickly_and_is_named(tmp_path, strategy, failing_rank):
    script = tmp_path / "fail_main.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(HERE)!r})
from ddp_script import main
if __name__ == "__main__":
    main()
""")
    cmd = [PYTHON, str(script), "--out", str(tmp_path / "out"), "--strategy", strategy, "--epochs", "50",
           "--fail-rank", str(failing_rank), "--fail-mode", "raise", "--timeout", "60"]
    proc, seconds = run(cmd, tmp_path, timeout=120)
    assert proc.returncode != 0
    assert seconds < 60, f"took {seconds:.0f}s: the other rank hung"
    assert f"deliberate failure on rank {failing_rank}" in proc.log
    if strategy == "ddp" and failing_rank == 1:
        assert "fulmen: rank 1 failed with ValueError: deliberate failure on rank 1" in proc.log


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_sigkilled_rank_ends_the_job(tmp_path, failing_rank):
    cmd = [PYTHON, str(SCRIPT), "--out", str(tmp_path / "out"), "--epochs", "50", "--fail-rank", str(failing_rank),
           "--fail-mode", "kill", "--timeout", "60"]
    proc, seconds = run(cmd, tmp_path, timeout=120)
    assert proc.returncode != 0, proc.log
    assert seconds < 60, f"took {seconds:.0f}s: the surviving rank hung\n{proc.log}"
    if failing_rank == 1:
        assert "rank 1 was killed by SIGKILL" in proc.log, f"exit code {proc.returncode}, log:\n{proc.log}"


def test_ddp_resume_from_checkpoint_is_exact(tmp_path):
    full = tmp_path / "full"
    proc, _ = run([PYTHON, str(SCRIPT), "--out", str(full), "--epochs", "3"], tmp_path, name="full")
    assert proc.returncode == 0, proc.log
    first = tmp_path / "first"
    proc, _ = run([PYTHON, str(SCRIPT), "--out", str(first), "--epochs", "1"], tmp_path, name="first")
    assert proc.returncode == 0, proc.log
    checkpoint = first / "fulmen_logs" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert len(saved["rng"]["per_rank"]) == 2  # every rank's random state is kept
    proc, _ = run([PYTHON, str(SCRIPT), "--out", str(first), "--epochs", "3", "--ckpt-path", str(checkpoint)],
                  tmp_path, name="resumed")
    assert proc.returncode == 0, proc.log
    resumed, reference = results(first), results(full)
    assert [r["params"] for r in resumed] == [r["params"] for r in reference]
    assert all(r["global_step"] == 12 for r in resumed)


def test_fabric_collectives_and_data_parallel_step(tmp_path):
    proc, _ = run([PYTHON, str(HERE / "fabric_ddp_script.py"), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.log
    ranks = [json.loads((tmp_path / f"fabric_rank_{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["sum"] == 3.0 and r["mean"] == 0.5
        assert r["gathered"] == [[0, 0], [1, 10]]
        assert r["broadcast"] == {"from": 1}
        assert r["steps"] == 4  # 64 samples / 2 ranks / batch 8
    assert ranks[0]["weight"] == ranks[1]["weight"] and ranks[0]["bias"] == ranks[1]["bias"]


@pytest.mark.parametrize("log_every", [1, 1000])
def test_sigusr1_under_ddp_saves_once_and_both_ranks_leave_with_the_preemption_code(tmp_path, log_every):
    # log_every=1000: the ranks agree on the signal about once a second of training, not at
    # logging intervals, which a scheduler's grace period may not outlast.
    import signal

    out = tmp_path / "out"
    log = open(tmp_path / "preempt.log", "w")
    proc = subprocess.Popen([PYTHON, str(SCRIPT), "--out", str(out), "--epochs", "50", "--step-sleep", "0.05",
                             "--log-every", str(log_every)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "rank 0 step 3" not in (tmp_path / "preempt.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "preempt.log").read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)  # to rank 0 only: fulmen forwards it to the rank it started
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "preempt.log").read_text()
    assert code == 75, text
    assert "SIGUSR1 received" in text and "Resume with ckpt_path='last'" in text
    last = out / "fulmen_logs" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] >= 3 and len(saved["rng"]["per_rank"]) == 2
    # 20 steps of 0.05 s make a second; a loaded machine may double that. Not 200 (the end).
    assert saved["global_step"] <= 3 + 60, saved["global_step"]
