"""``fulmen_ray.run``: start a training function as a Ray Train job, after checking what
would otherwise fail late (a worker group that never gets its GPUs waits forever; a function
that cannot be pickled fails inside Ray with a long traceback)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from fulmen.errors import FulmenConfigError, FulmenUserCodeError

_BACKENDS = (None, "gloo", "nccl")


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FulmenConfigError(f"{name}={value!r} must be an integer >= {minimum}")


def check_arguments(train_fn: Any, num_workers: Any, use_gpu: Any, max_failures: Any,
                    backend: Optional[str], config: Any) -> None:
    """Refuse, with what to change, the arguments ``run`` cannot start a job with (the
    checks that need no cluster)."""
    if not callable(train_fn):
        raise FulmenUserCodeError(
            f"train_fn={train_fn!r} is not callable; pass the function each worker runs, "
            "def train_fn(config): ... (it builds the Trainer or Fabric and trains)"
        )
    _check_count("num_workers", num_workers, 1)
    _check_count("max_failures", max_failures, -1)
    if not isinstance(use_gpu, bool):
        raise FulmenConfigError(f"use_gpu={use_gpu!r} must be True or False")
    if backend not in _BACKENDS:
        raise FulmenConfigError(f"backend={backend!r}; use 'gloo', 'nccl' or None (NCCL on GPU workers, gloo on CPU)")
    if backend == "nccl" and not use_gpu:
        raise FulmenConfigError("backend='nccl' needs GPU workers: set use_gpu=True, or use backend='gloo' on CPUs")
    from ray import cloudpickle

    for what, obj in (("train_fn", train_fn), ("config", config)):
        try:
            cloudpickle.dumps(obj)
        except Exception as exc:
            raise FulmenUserCodeError(
                f"{what} cannot be pickled, and Ray sends it to every worker: {type(exc).__name__}: {exc}. "
                "Keep locks, open files, threads and live connections out of it (and out of the "
                "variables the function refers to); create them inside the function instead"
            ) from exc


def check_gpus(num_workers: int) -> None:
    """``use_gpu=True`` on a cluster with fewer GPUs than workers: Ray would wait for them
    for ever, so say so now."""
    import ray

    available = int(ray.cluster_resources().get("GPU", 0))
    if available < num_workers:
        raise FulmenConfigError(
            f"use_gpu=True asks for {num_workers} GPU(s), one per worker, and the Ray cluster has "
            f"{available}; use fewer workers, add GPU nodes, or set use_gpu=False"
        )


def run(
    train_fn: Callable[..., Any],
    *,
    num_workers: int,
    use_gpu: bool = False,
    config: Optional[Dict[str, Any]] = None,
    max_failures: int = 0,
    storage_path: Optional[str] = None,
    name: Optional[str] = None,
    backend: Optional[str] = None,
    resources_per_worker: Optional[Dict[str, float]] = None,
    callbacks: Optional[Sequence[Any]] = None,
):
    """Run ``train_fn(config)`` on ``num_workers`` Ray Train workers and return Ray's
    ``Result``.

    A thin layer over ``ray.train.torch.TorchTrainer``, for the common case; build a
    ``TorchTrainer`` yourself for any other of its options, the training function is the
    same. Inside ``train_fn`` a fulmen Trainer or Fabric with ``strategy="ray"`` joins the
    worker group; a :class:`~fulmen_ray.report.RayTrainReportCallback` and
    ``ckpt_path=fulmen_ray.resume_checkpoint()`` make a restarted group resume exactly.

    Args:
        train_fn: Runs on every worker; takes ``config`` (or nothing). Must be picklable.
        num_workers: Worker processes, one device each.
        use_gpu: One GPU per worker (NCCL); the CPU with gloo otherwise.
        config: Passed to ``train_fn``; must be picklable.
        max_failures: How many times Ray restarts the worker group after a failure
            (``-1``: without limit); ``FailureConfig(max_failures=...)``.
        storage_path, name: Where Ray keeps the job's reported checkpoints
            (``RunConfig``); a new ``name`` starts afresh, the same one continues that job.
        backend: The process group backend; by default NCCL on GPU workers, gloo on CPU.
        resources_per_worker: Ray resources per worker (``ScalingConfig``).
        callbacks: Ray Train callbacks (``RunConfig(callbacks=...)``), run in the driver.
    """
    check_arguments(train_fn, num_workers, use_gpu, max_failures, backend, config)
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if use_gpu:
        if not ray.is_initialized():
            ray.init()  # what TorchTrainer would do: connect to the cluster (or start one)
        check_gpus(num_workers)
    scaling = ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker)
    run_config = RunConfig(name=name, storage_path=storage_path, failure_config=FailureConfig(max_failures=max_failures),
                           callbacks=list(callbacks or []))
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=run_config,
        torch_config=TorchConfig(backend=backend),
    )
    return trainer.fit()
