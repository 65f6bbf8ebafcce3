"""tests/xla runs torch-xla for real on its PJRT CPU device (``PJRT_DEVICE=CPU``, several
devices with ``CPU_NUM_DEVICES``), as torch-xla's own CI does. torch-xla 2.9 needs torch
2.9.0, so these run in ``nox -s xla``, which installs both; the default session (torch
2.13) skips them with the reason. Each run is a fresh process: SPMD is switched on per
process, and ``torch_xla.launch`` needs a process that has not used an XLA device yet."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

NEEDS_XLA = "torch-xla is not installed here (it needs torch 2.9.0): run nox -s xla"


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("torch_xla") is not None:
        return
    marker = pytest.mark.skip(reason=NEEDS_XLA)
    for item in items:
        if "tests/xla/" in str(item.fspath).replace("\\", "/") and "no_torch_xla" not in item.keywords:
            item.add_marker(marker)
