"""Entry point of fulmen-strategy-fsdp in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric, after checking this distribution's
requirement on ``fulmen``. It stays import-light: ``torch.distributed.fsdp`` and the
strategy module are imported by the factories, only when a user asks for one of the names.
"""

from __future__ import annotations

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy

_STRATEGY = "fulmen_fsdp.strategy:FSDPStrategy"



@hookimpl
def register_strategies(register):
    """Register ``fsdp``, ``fsdp_cpu_offload`` and ``hsdp``; the strategy module is imported
    only when one of them is asked for."""
    register(
        "fsdp",
        _lazy(_STRATEGY),
        "Fully Sharded Data Parallel (FSDP2): parameters, gradients and optimizer state sharded across processes",
    )
    register(
        "fsdp_cpu_offload",
        _lazy(_STRATEGY, cpu_offload=True),
        "fsdp with sharded parameters, gradients and optimizer state kept in CPU memory",
    )
    register(
        "hsdp",
        _lazy(_STRATEGY, sharding_strategy="hybrid"),
        "hybrid sharding: shard within a node, replicate across nodes (2-D device mesh)",
    )
