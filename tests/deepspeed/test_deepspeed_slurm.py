"""DeepSpeed under SLURM, for real: ``srun -n 2`` on a one-node cluster on 127.0.0.1 (the
daemons of tests/slurm/slurm_cluster.sh); fulmen finds the ranks through SLURM's variables and
DeepSpeed joins fulmen's process group, with no pdsh or SSH. Skipped where the SLURM daemons
are not installed (``bash tests/slurm/install_slurm.sh``; ``.ci/run`` does it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import TRAINER_SCRIPT
from ds_helpers import HERE, extensions_dir, ranks

CLUSTER = HERE.parent / "slurm" / "slurm_cluster.sh"

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not (shutil.which("slurmctld") and shutil.which("srun")),
                       reason="SLURM daemons are not installed: bash tests/slurm/install_slurm.sh"),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("deepspeed-slurm")
    subprocess.run(["bash", str(CLUSTER), "start", str(directory)], check=True, timeout=120)
    env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf"), "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": extensions_dir()}
    env.pop("MASTER_PORT", None)
    yield env
    subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], timeout=60)


def test_srun_two_tasks_train_deepspeed_stage_2_as_ddp_does(slurm, feature_runs, tmp_path):
    runs = [{"name": "slurm_stage_2", "strategy": "deepspeed_stage_2"}]
    log = tmp_path / "srun.log"
    with open(log, "w") as handle:
        proc = subprocess.run(
            ["srun", "-N1", "-n2", "--job-name=fulmen-deepspeed", sys.executable, str(TRAINER_SCRIPT),
             "--out", str(tmp_path), "--devices", "2", "--runs", json.dumps(runs)],
            env=slurm, stdout=handle, stderr=subprocess.STDOUT, timeout=480,
        )
    assert proc.returncode == 0, log.read_text()[-6000:]
    for reference, got in zip(ranks(feature_runs[0] / "ddp"), ranks(tmp_path / "slurm_stage_2")):
        assert got["world_size"] == 2 and got["strategy"] == "DeepSpeedStrategy"
        assert got["environment"] == "SLURMEnvironment"
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5, abs=1e-6)
