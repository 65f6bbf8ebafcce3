"""Entry point of fulmen-accelerator-xla in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric, after checking this distribution's
requirement on ``fulmen``. It stays import-light: torch-xla (seconds to import, and it may
probe for TPUs) is imported by the factories, when a user asks for one of the names.
"""

from __future__ import annotations

from fulmen.hookspecs import hookimpl
from fulmen.plugins.lazy import lazy_factory as _lazy

from fulmen_xla import runtime

STRATEGIES = {
    "single_xla": ("fulmen_xla.single:SingleXLAStrategy", "one process on one XLA device (TPU chip, PJRT CPU)"),
    "xla": ("fulmen_xla.multiprocess:XLAStrategy",
            "one process per XLA device, gradients all-reduced (torch_xla.launch on TPU)"),
    "xla_spmd": ("fulmen_xla.spmd:XLASPMDStrategy",
                 "one process drives every device of the host; parameters sharded over a device mesh "
                 "(FSDPv2), distributed checkpoints"),
}


def _tagged(factory):
    factory.unavailable_reason = runtime.unavailable_reason  # read by `fulmen plugins`
    factory.backend = runtime.backend_description
    return factory


@hookimpl
def register_accelerators(register):
    """``xla``: imports only this package's small accelerator module, never torch-xla."""
    from fulmen_xla.accelerator import XLAAccelerator

    register("xla", XLAAccelerator, "devices of the PJRT runtime: TPU, or CPU/GPU with PJRT_DEVICE")


@hookimpl
def register_strategies(register):
    for name, (target, description) in STRATEGIES.items():
        register(name, _tagged(_lazy(target)), description)


@hookimpl
def read_checkpoint_directory(path):
    """An ``xla_spmd`` checkpoint directory as one checkpoint with every tensor on the CPU
    (verified first; torch-xla not needed); None for any other directory."""
    from fulmen_xla import spmd_checkpoint

    return spmd_checkpoint.read_on_host(path)
