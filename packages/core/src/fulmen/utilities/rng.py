"""Every random generator a training step draws from, as plain checkpoint data.

Python's ``random``, NumPy's legacy global generator (when NumPy is installed), torch's
CPU generator and each CUDA device's generator. NumPy's state is stored as a tensor so the
checkpoint stays loadable with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import torch


def capture() -> Dict[str, Any]:
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: Dict[str, Any]) -> None:
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
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
