"""Entry point of fulmen-strategy-deepspeed in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric, after checking this distribution's
requirement on ``fulmen``. It stays import-light: neither ``deepspeed`` (seconds to import,
and it probes the accelerator) nor the strategy module is imported here; the factories
import them when a user asks for one of the names.
"""

from __future__ import annotations

from importlib import metadata
from typing import Optional

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy

_STRATEGY = "fulmen_deepspeed.strategy:DeepSpeedStrategy"

#: name -> (preset arguments, description)
NAMES = {
    "deepspeed": ({}, "DeepSpeed with your config (DeepSpeedStrategy(config=...)); ZeRO stage 2 without one"),
    "deepspeed_stage_1": ({"stage": 1}, "DeepSpeed ZeRO stage 1: optimizer state sharded across processes"),
    "deepspeed_stage_2": ({"stage": 2}, "DeepSpeed ZeRO stage 2: optimizer state and gradients sharded"),
    "deepspeed_stage_2_offload": ({"stage": 2, "offload_optimizer": True},
                                  "DeepSpeed ZeRO stage 2, optimizer state and step in CPU memory"),
    "deepspeed_stage_3": ({"stage": 3}, "DeepSpeed ZeRO stage 3: parameters, gradients and optimizer state sharded"),
    "deepspeed_stage_3_offload": ({"stage": 3, "offload_optimizer": True, "offload_parameters": True},
                                  "DeepSpeed ZeRO stage 3, parameters and optimizer state in CPU memory"),
    "deepspeed_stage_3_offload_nvme": ({"stage": 3, "offload_optimizer": True, "offload_parameters": True,
                                        "offload_device": "nvme"},
                                       "DeepSpeed ZeRO stage 3, parameters and optimizer state on NVMe "
                                       "(DeepSpeedStrategy(nvme_path=...) or the config says where)"),
}


def deepspeed_version() -> Optional[str]:
    """DeepSpeed's installed version, from its metadata (importing it takes seconds)."""
    try:
        return metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        return None


def unavailable_reason() -> Optional[str]:
    if deepspeed_version() is None:
        return 'deepspeed is not installed: DS_BUILD_OPS=0 pip install "fulmen-strategy-deepspeed[deepspeed]"'
    return None


@hookimpl
def register_strategies(register):
    """Register ``deepspeed`` and ``deepspeed_stage_*``; nothing heavy is imported."""
    for name, (preset, description) in NAMES.items():
        factory = _lazy(_STRATEGY, **preset)
        factory.unavailable_reason = unavailable_reason  # read by `fulmen plugins`
        factory.backend = lambda: f"deepspeed {deepspeed_version()}" if deepspeed_version() else None
        register(name, factory, description)


@hookimpl
def read_checkpoint_directory(path):
    """A fulmen DeepSpeed checkpoint directory as one weights checkpoint (verified, then
    consolidated on the CPU); None for any other directory. The reader is imported only
    when ``Module.load_from_checkpoint`` is handed a directory."""
    from fulmen_deepspeed import convert

    return convert.read_checkpoint(path)
