"""``strategy="single_xla"``: one process, one XLA device."""

from __future__ import annotations

from fulmen.strategies.single_device import SingleDeviceStrategy

from fulmen_xla.common import XLALoopMixin


class SingleXLAStrategy(XLALoopMixin, SingleDeviceStrategy):
    """One process on its XLA device: a TPU chip, or the PJRT CPU device in tests.

    The model moves to ``torch_xla.device()``; batches arrive through torch-xla's background
    loader; each optimizer step ends with ``torch_xla.sync()``; checkpoints are copied to
    the host and written by fulmen's checkpoint IO (atomic, checksummed, loaded with
    ``weights_only=True``), so they load on a machine without torch-xla.
    """

    name = "single_xla"
    supports_inference_mode = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._xla_init()
