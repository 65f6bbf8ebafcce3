"""Entry point of fulmen-strategy-deepspeed in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric, after checking this distribution's
requirement on ``fulmen``. It stays import-light: neither ``deepspeed`` (seconds to import,
and it probes the accelerator) nor the strategy module is imported here; the factories
import them when a user asks for one of the names.
"""

from __future__ import annotations

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy

_STRATEGY = "fulmen_deepspeed.strategy:DeepSpeedStrategy"

#: name -> (preset arguments, description)
NAMES = {
    "deepspeed": ({}, "DeepSpeed with your config (DeepSpeedStrategy(config=...)); ZeRO stage 2 without one"),
    "deepspeed_stage_1": ({"stage": 1}, "DeepSpeed ZeRO stage 1: optimizer state sharded across processes"),
    "deepspeed_stage_2": ({"stage": 2}, "DeepSpeed ZeRO stage 2: optimizer state and gradients sharded"),
    "deepspeed_stage_3": ({"stage": 3}, "DeepSpeed ZeRO stage 3: parameters, gradients and optimizer state sharded"),
}



@hookimpl
def register_strategies(register):
    """Register ``deepspeed`` and ``deepspeed_stage_1/2/3``; nothing heavy is imported."""
    for name, (preset, description) in NAMES.items():
        register(name, _lazy(_STRATEGY, **preset), description)


@hookimpl
def read_checkpoint_directory(path):
    """A fulmen DeepSpeed checkpoint directory as one weights checkpoint (verified, then
    consolidated on the CPU); None for any other directory. The reader is imported only
    when ``Module.load_from_checkpoint`` is handed a directory."""
    from fulmen_deepspeed import convert

    return convert.read_checkpoint(path)
