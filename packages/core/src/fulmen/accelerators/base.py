"""The accelerator contract: which devices exist, how to pick them, what they can compute.

An accelerator knows nothing about processes or gradients; strategies own that. Keeping it
this small is what lets a third party add a device type in one short class.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import torch

from fulmen.errors import FulmenConfigError

DevicesArg = Union[int, str, Sequence[int], None]


class Accelerator:
    """Base class; subclasses set ``name`` and ``device_type`` and override what differs."""

    name: str = ""
    device_type: str = ""
    # Among available accelerators, ``accelerator="auto"`` picks the highest priority.
    auto_priority: int = 0

    @classmethod
    def is_available(cls) -> bool:
        """Whether this device type can be used in this process (hardware and driver present).

        Called on the class, for every registered accelerator, when a user asks for
        ``accelerator="auto"``: keep it cheap and never raise where the hardware is absent."""
        return False

    @classmethod
    def device_count(cls) -> int:
        """How many devices of this type this process can see (0 where none); a classmethod,
        as cheap as :meth:`is_available`."""
        return 0

    @classmethod
    def default_devices(cls) -> int:
        """How many devices ``devices="auto"`` means."""
        return max(1, cls.device_count())

    @classmethod
    def parse_devices(cls, devices: DevicesArg) -> List[torch.device]:
        """``"auto"``, ``-1``, ``N``, ``"0,2"`` or ``[0, 2]`` → the devices of this process group."""
        indices = parse_device_indices(devices, cls.default_devices(), cls.device_count(), cls.name)
        return [cls.make_device(i) for i in indices]

    @classmethod
    def make_device(cls, index: int) -> torch.device:
        """The ``torch.device`` for device ``index`` of this type; override where devices are not
        addressed as ``torch.device(device_type, index)``."""
        return torch.device(cls.device_type, index)

    @classmethod
    def auto_strategy(cls, num_processes: int) -> Optional[str]:
        """The registered strategy name ``strategy="auto"`` means for this device type and this
        many devices in all, or ``None`` for fulmen's default (``single_device``, or ``ddp``
        for several). A device type with its own runtime (XLA) names its own strategies."""
        return None

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (no-op where that means nothing)."""

    def teardown(self) -> None:
        """Release what the accelerator holds once a stage ends (caches, handles); the next stage
        calls :meth:`setup_device` again."""
        pass

    def unsupported_precision_reason(self, precision: Any) -> Optional[str]:
        """``None`` if ``precision`` runs here, otherwise why not and what to choose."""
        return None

    # ------------------------------------------------------------------ capabilities
    # The core asks the accelerator instead of testing ``device.type`` against names it
    # knows, so a device type added by a plugin (XLA, a TPU backend) answers for itself.

    #: Whether host-to-device batch copies may be issued with ``non_blocking=True``: true
    #: where the copy runs on a stream that later kernels wait on (CUDA, XLA), so it can
    #: overlap the previous step; false where it would return before the data is there.
    non_blocking_copies: bool = False

    def get_rng_state(self) -> Optional[Any]:
        """The random state of this accelerator's generators as checkpoint data (tensors,
        lists, numbers), or ``None`` when it draws from the host generators only. The host
        generators (Python, NumPy, torch's CPU generator) are captured by fulmen itself."""
        return None

    def set_rng_state(self, state: Any) -> None:
        """Put back what :meth:`get_rng_state` returned on an earlier run."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def parse_device_indices(devices: DevicesArg, auto: int, count: int, name: str) -> List[int]:
    if devices is None or devices == "auto":
        return list(range(auto))
    if isinstance(devices, str):
        text = devices.strip()
        if text == "-1":
            devices = -1
        elif "," in text:
            devices = [int(part) for part in text.split(",") if part.strip()]
        else:
            try:
                devices = int(text)
            except ValueError:
                raise FulmenConfigError(
                    f"devices={devices!r} is not understood; use 'auto', a count such as 2, "
                    "-1 for all, or indices such as '0,1' or [0, 1]"
                ) from None
    if isinstance(devices, bool):
        raise FulmenConfigError("devices must be a count, a list of indices or 'auto', not a bool")
    if isinstance(devices, int):
        if devices == -1:
            devices = max(count, 1) if name == "cpu" else count
            if devices == 0:
                raise FulmenConfigError(f"devices=-1 asks for every {name} device but none was found")
        if devices <= 0:
            raise FulmenConfigError(f"devices={devices} must be a positive number (or -1 for all)")
        if count and name != "cpu" and devices > count:
            raise FulmenConfigError(
                f"devices={devices} asks for more {name} devices than the {count} available"
            )
        return list(range(devices))
    indices = [int(i) for i in devices]
    if not indices:
        raise FulmenConfigError("devices=[] selects no device; pass at least one index")
    if name != "cpu":
        bad = [i for i in indices if i < 0 or i >= count]
        if bad:
            raise FulmenConfigError(
                f"devices={list(devices)} names {name} device(s) {bad}, but only indices "
                f"0..{count - 1} exist"
            )
    return indices
