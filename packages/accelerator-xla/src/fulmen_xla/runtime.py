"""The one module that asks the PJRT runtime what exists; everything else asks here.

Two rules shape it. Nothing here may start the runtime: ``torch_xla.launch`` refuses to run
once a process has touched an XLA device, and ``accelerator="auto"`` asks every accelerator
whether it is available, so these questions are answered from the environment and from
torch-xla's own probes that read it (``PJRT_DEVICE``, ``CPU_NUM_DEVICES``, the TPU chips
on the PCI bus). And it is the only place that imports torch-xla's runtime, so a second
device backend (the native ``torch-tpu``) means a second module like this one, not edits
throughout the package.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

INSTALL_HINT = 'pip install "fulmen-accelerator-xla[xla]" (torch-xla 2.9 needs torch==2.9.0)'


def installed_version() -> Optional[str]:
    """torch-xla's version from its metadata, without importing it (an import takes seconds)."""
    try:
        return metadata.version("torch-xla")
    except metadata.PackageNotFoundError:
        return None


def backend_description() -> Optional[str]:
    """What ``fulmen plugins`` prints next to the names: ``torch-xla 2.9.0``."""
    version = installed_version()
    return f"torch-xla {version}" if version else None


def unavailable_reason() -> Optional[str]:
    """Why torch-xla cannot be used here, or ``None``; read by ``fulmen plugins``."""
    if importlib.util.find_spec("torch_xla") is None:
        return f"torch-xla is not installed: {INSTALL_HINT}"
    return None


# Google's PCI vendor id, and the device ids of TPU chips v2 to 7x (as torch-xla 2.9 lists them).
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = {"0x0027", "0x005e", "0x0063", "0x006f", "0x0056", "0x0062", "0x0076"}


def _tpu_chips() -> int:
    """TPU chips on this host's PCI bus, read from sysfs. Not torch-xla's probe: importing
    torch_xla sets ``PJRT_DEVICE=CPU`` in this process when it finds no TPU, which would
    make every later question here answer "an XLA CPU device is configured"."""
    chips = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            if Path(vendor).read_text().strip() != _GOOGLE_PCI_VENDOR:
                continue
            if (Path(vendor).parent / "device").read_text().strip() in _TPU_PCI_DEVICES:
                chips += 1
        except OSError:
            continue
    return chips


def device_type() -> Optional[str]:
    """The PJRT device type this process would use (``"TPU"``, ``"CPU"``, ``"CUDA"``...):
    ``PJRT_DEVICE`` when set, else ``"TPU"`` where chips are found, else ``None``.

    Unlike torch-xla's own default, a machine without TPU and without ``PJRT_DEVICE`` has no
    XLA device here: falling back to the CPU silently would make ``accelerator="auto"``
    choose a slow XLA-on-CPU run on every machine with torch-xla installed."""
    configured = os.environ.get("PJRT_DEVICE")
    if configured:
        return configured.split("_")[0].upper()
    if unavailable_reason() is None and _tpu_chips() > 0:
        return "TPU"
    return None


def local_device_count() -> int:
    """Devices this host offers to one job, without starting the runtime."""
    kind = device_type()
    if kind is None or unavailable_reason() is not None:
        return 0
    if kind == "TPU":
        try:
            from torch_xla._internal import tpu

            return tpu.num_available_devices()
        except Exception:
            return _tpu_chips()
    if kind == "CPU":
        return int(os.environ.get("CPU_NUM_DEVICES", "1"))
    if kind in ("CUDA", "GPU"):
        count = os.environ.get("GPU_NUM_DEVICES")
        if count:
            return int(count)
        import torch

        return torch.cuda.device_count()
    return 1  # a PJRT plugin device type torch-xla knows and we do not: assume one


def is_started() -> bool:
    """Whether this process has already started the PJRT runtime (used an XLA device)."""
    torch_xla = sys.modules.get("torch_xla")  # not imported: not started (and importing has side effects)
    return torch_xla is not None and bool(torch_xla._XLAC._xla_runtime_is_initialized())


def current_device():
    """This process's XLA device (``torch_xla.device()``): starts the runtime."""
    import torch_xla

    return torch_xla.device()


def sync() -> None:
    """Cut the lazy graph here and run it (``torch_xla.sync()``)."""
    import torch_xla

    torch_xla.sync()
