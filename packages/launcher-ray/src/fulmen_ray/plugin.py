"""Entry point of fulmen-ray in the ``fulmen.plugins`` group.

Import-light: fulmen imports this module at the first Trainer/Fabric of every process, Ray
or not, so ``ray`` (a second or more to import) is only imported by the factories and by
``RayEnvironment.detect`` once a Ray Train worker has imported it anyway.
"""

from __future__ import annotations

from importlib import metadata
from typing import Optional

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy


def ray_version() -> Optional[str]:
    """Ray's installed version, from its metadata (without importing it)."""
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return None


def unavailable_reason() -> Optional[str]:
    if ray_version() is None:
        return 'ray is not installed: pip install "fulmen-ray[ray]"'
    return None


def _describe(factory):
    factory.unavailable_reason = unavailable_reason  # read by `fulmen plugins`
    factory.backend = lambda: f"ray {ray_version()}" if ray_version() else None
    return factory


@hookimpl
def register_environments(register):
    """``ray``: ranks and world size from Ray Train's context, detected inside its workers."""
    # The class itself, not a lazy factory: detection reads ``detection_priority`` and
    # ``detect`` from what is registered. Its module imports nothing but fulmen's base class.
    from fulmen_ray.environment import RayEnvironment

    register("ray", RayEnvironment,
             "Ray Train workers (ray.train.get_context(): world rank, local rank, world size)")


@hookimpl
def register_strategies(register):
    """``ray``: data parallel over the worker group Ray Train started and connected."""
    register("ray", _describe(_lazy("fulmen_ray.strategy:RayDDPStrategy")),
             "DDP across the workers of a Ray Train job (one device per worker, Ray's process group)")


@hookimpl
def register_callbacks(register):
    """``ray_train_report``: logged rows and checkpoints handed to ``ray.train.report``."""
    register("ray_train_report", _describe(_lazy("fulmen_ray.report:RayTrainReportCallback")),
             "report ModelCheckpoint's checkpoints and every logged row to ray.train.report")
