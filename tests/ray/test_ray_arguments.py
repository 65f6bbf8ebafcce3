"""fulmen-ray's refusals: arguments ``fulmen_ray.run`` cannot start a job with, and
``strategy="ray"`` outside a Ray Train worker, each with what to change."""

from __future__ import annotations

import threading

import pytest

from conftest import SKIP_REASON, ray_installed

if not ray_installed():
    pytest.skip(SKIP_REASON, allow_module_level=True)

import fulmen  # noqa: E402
from fulmen.errors import FulmenConfigError, FulmenUserCodeError  # noqa: E402

import fulmen_ray  # noqa: E402
from ray_programs import ray_train_fn  # noqa: E402


@pytest.mark.parametrize("kwargs, message", [
    ({"num_workers": 0}, r"num_workers=0 must be an integer >= 1"),
    ({"num_workers": True}, r"num_workers=True must be an integer >= 1"),
    ({"num_workers": 2, "max_failures": -2}, r"max_failures=-2 must be an integer >= -1"),
    ({"num_workers": 2, "use_gpu": "yes"}, r"use_gpu='yes' must be True or False"),
    ({"num_workers": 2, "backend": "mpi"}, r"backend='mpi'; use 'gloo', 'nccl' or None"),
    ({"num_workers": 2, "backend": "nccl"}, r"backend='nccl' needs GPU workers: set use_gpu=True"),
])
def test_bad_run_arguments_are_refused_before_ray_starts(kwargs, message):
    with pytest.raises(FulmenConfigError, match=message):
        fulmen_ray.run(ray_train_fn, **kwargs)


def test_a_function_that_cannot_be_pickled_is_named_with_the_reason():
    lock = threading.Lock()

    def train_fn(config):
        with lock:  # a lock cannot travel to another process
            pass

    with pytest.raises(FulmenUserCodeError, match=r"train_fn cannot be pickled.*lock.*create them inside the function"):
        fulmen_ray.run(train_fn, num_workers=2)
    with pytest.raises(FulmenUserCodeError, match=r"config cannot be pickled"):
        fulmen_ray.run(ray_train_fn, num_workers=2, config={"lock": lock})
    with pytest.raises(FulmenUserCodeError, match=r"train_fn=3 is not callable"):
        fulmen_ray.run(3, num_workers=2)


def test_gpus_the_cluster_does_not_have_are_refused_instead_of_waited_for(ray_cluster):
    with pytest.raises(FulmenConfigError, match=r"use_gpu=True asks for 2 GPU\(s\), one per worker, and the Ray "
                                                r"cluster has 0; .*use_gpu=False"):
        fulmen_ray.run(ray_train_fn, num_workers=2, use_gpu=True)


def test_the_ray_strategy_outside_a_ray_worker_says_how_to_start_one(tmp_path):
    with pytest.raises(FulmenConfigError, match=r'strategy="ray" runs inside a Ray Train worker: start .*fulmen_ray.run'):
        fulmen.Trainer(accelerator="cpu", strategy="ray", logger=False, default_root_dir=tmp_path)
    with pytest.raises(FulmenConfigError, match=r'strategy="ray" runs inside a Ray Train worker'):
        fulmen.Fabric(accelerator="cpu", strategy="ray")


def test_a_strategy_with_its_own_checkpoint_format_is_refused_before_training(tmp_path):
    """Sharded strategies (fsdp, deepspeed) write checkpoint directories, which the report
    callback cannot hand to Ray yet: refused at setup, naming what works, instead of an
    IsADirectoryError at the first checkpoint. A strategy of the test's own stands for them."""
    import os

    import torch

    import ray_programs
    from fulmen.strategies import SingleDeviceStrategy

    class DirectoryCheckpoints(SingleDeviceStrategy):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            os.makedirs(path, exist_ok=True)
            torch.save(checkpoint, os.path.join(path, "rank0.pt"))

    trainer = fulmen.Trainer(
        accelerator="cpu", strategy=DirectoryCheckpoints(), max_steps=2, logger=False, default_root_dir=tmp_path,
        callbacks=[fulmen_ray.RayTrainReportCallback()], enable_progress_bar=False, enable_model_summary=False,
    )
    with pytest.raises(FulmenConfigError, match=r"strategy DirectoryCheckpoints writes checkpoints in its own "
                                                r"format .*fsdp and deepspeed.*use strategy=\"ray\""):
        trainer.fit(ray_programs._module_class()(), train_dataloaders=ray_programs._data())
    assert trainer.global_step == 0
