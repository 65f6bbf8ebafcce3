"""The core's own accelerators, strategies, precisions, environments, callbacks, logger,
checkpoint IO and profilers, registered through the same hooks an outside plugin uses.

If something here needed a private door into the core, outside plugins could not do the
same; keeping the built-ins on the public hooks is how we know the plugin API is enough.
Imports happen inside the factories so that a Trainer pays only for what it uses.
"""

from __future__ import annotations

import functools

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy



@hookimpl
def register_accelerators(register):
    from fulmen.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

    register("cpu", CPUAccelerator, "the CPU of this machine")
    register("cuda", CUDAAccelerator, "NVIDIA GPUs through torch.cuda")
    register("mps", MPSAccelerator, "Apple GPUs through torch.backends.mps")


@hookimpl
def register_strategies(register):
    from fulmen.strategies.single_device import SingleDeviceStrategy

    register("single_device", SingleDeviceStrategy, "one process on one device")
    ddp = "fulmen.strategies.ddp:DDPStrategy"
    register("ddp", _lazy(ddp), "DistributedDataParallel; fulmen re-runs your command per local rank (or uses torchrun/srun/mpirun's)")
    register("ddp_spawn", _lazy(ddp, start_method="spawn"), "DistributedDataParallel with ranks started by torch.multiprocessing spawn")
    register("ddp_fork", _lazy(ddp, start_method="fork"), "DistributedDataParallel with forked ranks (notebooks; CPU or before CUDA is initialised)")
    register("ddp_find_unused_parameters_true", _lazy(ddp, find_unused_parameters=True), "ddp with find_unused_parameters=True")


@hookimpl
def register_precisions(register):
    import torch

    from fulmen.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

    register("32-true", Precision, "float32 everywhere")
    register("64-true", DoublePrecision, "float64 parameters and inputs")
    register("bf16-mixed", functools.partial(MixedPrecision, torch.bfloat16), "float32 weights, bfloat16 autocast")
    register("16-mixed", functools.partial(MixedPrecision, torch.float16), "float32 weights, float16 autocast with a gradient scaler (CUDA)")
    register("bf16-true", functools.partial(HalfPrecision, torch.bfloat16), "bfloat16 parameters and inputs")
    register("16-true", functools.partial(HalfPrecision, torch.float16), "float16 parameters and inputs (CUDA)")


@hookimpl
def register_environments(register):
    from fulmen.environments.local import LocalEnvironment

    from fulmen.environments import LSFEnvironment, MPIEnvironment, SLURMEnvironment, TorchElasticEnvironment

    # Detection tries the highest detection_priority first: torchrun (40), SLURM (30),
    # LSF (20), MPI (10), then local (-100), which always matches.
    register("torchelastic", TorchElasticEnvironment, "torchrun / TorchElastic / Kubernetes PyTorchJob (RANK, WORLD_SIZE, LOCAL_RANK)")
    register("slurm", SLURMEnvironment, "SLURM srun job steps (SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST)")
    register("lsf", LSFEnvironment, "IBM LSF jsrun (LSB_JOBID, JSM_NAMESPACE_*)")
    register("mpi", MPIEnvironment, "mpirun / mpiexec (OMPI_COMM_WORLD_*, PMI_*)")
    register("local", LocalEnvironment, "this machine; processes started by fulmen or a single process")


@hookimpl
def register_checkpoint_io(register):
    from fulmen.io.checkpoint_io import TorchCheckpointIO

    register("torch", TorchCheckpointIO, "torch.save with atomic rename and checksum; torch.load(weights_only=True)")
    register("async", _lazy("fulmen.io.async_checkpoint_io:AsyncCheckpointIO"), "writes in a background thread; the loop only waits for the copy to host memory")


@hookimpl
def register_loggers(register):
    register("csv", _lazy("fulmen.loggers.csv_logger:CSVLogger"), "metrics.csv and hparams.json on local disk")


@hookimpl
def register_callbacks(register):
    register("model_checkpoint", _lazy("fulmen.callbacks.model_checkpoint:ModelCheckpoint"), "save top-k and last checkpoints")
    register("early_stopping", _lazy("fulmen.callbacks.early_stopping:EarlyStopping"), "stop when a monitored metric stops improving")
    register("lr_monitor", _lazy("fulmen.callbacks.lr_monitor:LearningRateMonitor"), "log learning rates")
    register("progress_bar", _lazy("fulmen.callbacks.progress_bar:ProgressBar"), "tqdm progress bar with prog_bar metrics")
    register("model_summary", _lazy("fulmen.callbacks.model_summary:ModelSummary"), "print a table of submodules and parameter counts")
    register("timer", _lazy("fulmen.callbacks.timer:Timer"), "track time and stop after a duration")
    register("on_exception_checkpoint", _lazy("fulmen.callbacks.on_exception_checkpoint:OnExceptionCheckpoint"), "save a checkpoint when training raises")
    register("backbone_finetuning", _lazy("fulmen.callbacks.finetuning:BackboneFinetuning"), "train module.backbone frozen, then unfrozen into its own param group")
    register("stochastic_weight_averaging", _lazy("fulmen.callbacks.swa:StochasticWeightAveraging"), "average the weights of the last epochs (SWA)")
    register("ema_weight_averaging", _lazy("fulmen.callbacks.ema:EMAWeightAveraging"), "exponential moving average of the weights, used for validation and checkpoints")
    register("gradient_accumulation_scheduler", _lazy("fulmen.callbacks.accumulation_scheduler:GradientAccumulationScheduler"), "change accumulate_grad_batches by epoch")


@hookimpl
def register_profilers(register):
    register("simple", _lazy("fulmen.profilers.simple:SimpleProfiler"), "wall-clock time per action: mean, calls, total, share of the run")
    register("advanced", _lazy("fulmen.profilers.advanced:AdvancedProfiler"), "cProfile per action, reported with pstats")
    register("pytorch", _lazy("fulmen.profilers.pytorch:PyTorchProfiler"), "torch.profiler: operator key averages and a chrome trace")


@hookimpl
def register_cli_commands(register):
    """``fulmen report RUN_DIR``: a page of a CSV-logged run's curves (see fulmen.report)."""
    from fulmen.report.command import configure

    register("report", configure, "write an HTML page with a CSV-logged run's curves, hyperparameters and checkpoints")
