"""Cluster environments read from the variables each scheduler really sets (names and
semantics from SLURM 22.05, torchrun, LSF jsrun, Open MPI and MPICH)."""

from __future__ import annotations

import pytest

import fulmen
from fulmen.environments import LSFEnvironment, MPIEnvironment, SLURMEnvironment, TorchElasticEnvironment
from fulmen.environments.slurm import expand_nodelist
from fulmen.errors import FulmenConfigError
from fulmen.fabric.connector import detect_environment

SCHEDULER_PREFIXES = ("SLURM_", "LSB_", "JSM_", "OMPI_", "PMI_", "TORCHELASTIC_", "FULMEN_LAUNCHED")
RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK", "NODE_RANK", "MPI_LOCALRANKID")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(SCHEDULER_PREFIXES) or name in RENDEZVOUS:
            monkeypatch.delenv(name)


def registry():
    return fulmen.Fabric(accelerator="cpu").registry


SLURM_STEP = {
    "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
    "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "train",
}


def test_slurm_step_variables(monkeypatch):
    for k, v in SLURM_STEP.items():
        monkeypatch.setenv(k, v)
    env = detect_environment(registry())
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 1, 1)
    assert env.main_address == "gpu07"
    assert env.main_port == 15000 + 4242 % 20000
    monkeypatch.setenv("MASTER_PORT", "29999")
    assert env.main_port == 29999


def test_slurm_batch_shell_and_salloc_shell_are_not_ranks(monkeypatch):
    # The batch script's own shell sees SLURM_PROCID/NTASKS but no step: it is no rank 0.
    for k, v in SLURM_STEP.items():
        if k != "SLURM_STEP_ID":
            monkeypatch.setenv(k, v)
    assert type(detect_environment(registry())).__name__ == "LocalEnvironment"
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert not SLURMEnvironment.detect()


def test_slurm_layout_mismatch_is_a_clear_error(monkeypatch):
    for k, v in SLURM_STEP.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(FulmenConfigError, match=r"started 4 processes.*devices=2 x num_nodes=1"):
        fulmen.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False)


@pytest.mark.parametrize("text, hosts", [
    ("n[1-3,7],gpu-a", ["n1", "n2", "n3", "n7", "gpu-a"]),
    ("node[001-003]", ["node001", "node002", "node003"]),
    ("single", ["single"]),
    ("a[1-2],b[5]", ["a1", "a2", "b5"]),
])
def test_nodelist_expansion(text, hosts):
    assert expand_nodelist(text) == hosts


def test_torchelastic_variables_and_priority_over_slurm(monkeypatch):
    for k, v in {**SLURM_STEP, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.5",
                 "MASTER_PORT": "29500", "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "abc"}.items():
        monkeypatch.setenv(k, v)
    env = detect_environment(registry())
    assert isinstance(env, TorchElasticEnvironment)  # torchrun inside an allocation wins
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.main_address, env.main_port) == (2, 1, 1, "10.0.0.5", 29500)


def test_lsf_variables(monkeypatch, tmp_path):
    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch1\nhostA\nhostA\nhostB\nhostB\n")
    for k, v in {"LSB_JOBID": "77", "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "2",
                 "JSM_NAMESPACE_LOCAL_RANK": "0", "JSM_NAMESPACE_LOCAL_SIZE": "2", "LSB_DJOB_RANKFILE": str(rankfile)}.items():
        monkeypatch.setenv(k, v)
    env = detect_environment(registry())
    assert isinstance(env, LSFEnvironment)
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 2, 0, 1)
    assert env.main_address == "hostA" and env.main_port == 10077


def test_open_mpi_and_mpich_variables(monkeypatch):
    for k, v in {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                 "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    env = detect_environment(registry())
    assert isinstance(env, MPIEnvironment)
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (2, 1, 1, 0)
    assert env.main_address == "127.0.0.1"  # one node: loopback
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1")
    with pytest.raises(FulmenConfigError, match="MASTER_ADDR"):
        env.main_address  # several nodes and no address given
    for k in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setenv("PMI_RANK", "2")
    env = detect_environment(registry())
    assert isinstance(env, MPIEnvironment) and (env.world_size(), env.global_rank()) == (3, 2)


def test_environment_chosen_by_name_overrides_detection(monkeypatch):
    for k, v in SLURM_STEP.items():
        monkeypatch.setenv(k, v)
    fabric = fulmen.Fabric(accelerator="cpu", plugins=["local"])
    assert type(fabric.strategy.cluster_environment).__name__ == "LocalEnvironment"


def test_fulmen_plugins_lists_environments_in_detection_order():
    reg = registry()
    ordered = sorted(reg.entries("environment"), key=lambda e: -getattr(e.factory, "detection_priority", 0))
    # The core's own; installed plugin packages add theirs (fulmen-ray's "ray" ranks first).
    assert [e.name for e in ordered if e.plugin == "fulmen"] == ["torchelastic", "slurm", "lsf", "mpi", "local"]
