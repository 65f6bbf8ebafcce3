"""Every random generator a training step draws from, as plain checkpoint data.

The host generators (Python's ``random``, NumPy's legacy global generator when NumPy is
installed, torch's CPU generator) are captured here; a device's own generators belong to
its accelerator (``Accelerator.get_rng_state``), so a device type added by a plugin keeps
its random streams without this module knowing it exists. NumPy's state is stored as a
tensor so the checkpoint stays loadable with ``weights_only=True``.

Each rank of a multi-process run draws its own numbers (dropout masks differ per rank), so
checkpoints keep one state per rank: :func:`capture_per_rank` and :func:`for_rank` are the
one record the Trainer and Fabric both write and read.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Dict, Optional

import torch

# Checkpoints written before accelerators owned their generators kept CUDA's under this key.
_LEGACY_DEVICE_KEY = "cuda"


def capture(accelerator: Any = None) -> Dict[str, Any]:
    """This process's random state; ``accelerator`` adds its device generators."""
    state: Dict[str, Any] = {"python": _python_state(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    except ImportError:
        pass
    device_state = accelerator.get_rng_state() if accelerator is not None else None
    if device_state is not None:
        state["device"] = {"accelerator": accelerator.name, "state": device_state}
    return state


def restore(state: Dict[str, Any], accelerator: Any = None) -> None:
    """Put back what :func:`capture` returned; a device state saved by another kind of
    accelerator is left alone (its generators do not exist here)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        try:
            import numpy as np

            saved = state["numpy"]
            np.random.set_state(
                (saved["kind"], saved["keys"].numpy().astype("uint32"), saved["pos"], saved["has_gauss"], saved["cached_gaussian"])
            )
        except ImportError:
            pass
    if accelerator is None:
        return
    device = state.get("device")
    if device is not None and device.get("accelerator") == accelerator.name:
        accelerator.set_rng_state(device["state"])
    elif device is None and _LEGACY_DEVICE_KEY in state and accelerator.name == _LEGACY_DEVICE_KEY:
        accelerator.set_rng_state(state[_LEGACY_DEVICE_KEY])


def capture_per_rank(strategy: Any) -> Dict[str, Any]:
    """Every rank's state, in rank order (a collective: all ranks must call it)."""
    own = capture(strategy.accelerator)
    states = strategy.all_gather_object(own) if strategy.world_size > 1 else [own]
    return {"per_rank": states}


def for_rank(saved: Optional[Dict[str, Any]], rank: int) -> Optional[Dict[str, Any]]:
    """This rank's entry of a :func:`capture_per_rank` record (or an older single state)."""
    if not saved:
        return None
    states = saved.get("per_rank")
    if states is None:
        return saved
    if rank < len(states):
        return states[rank]
    warnings.warn(
        f"the checkpoint holds random states for {len(states)} ranks and this is rank {rank}; "
        "this rank starts from rank 0's states, so the resumed run is not bitwise identical",
        _warning_class(),
        stacklevel=3,
    )
    return states[0]


def _warning_class():
    from fulmen.errors import FulmenWarning

    return FulmenWarning


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
