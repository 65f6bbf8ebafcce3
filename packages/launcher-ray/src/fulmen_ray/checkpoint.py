"""Where a restarted Ray Train worker finds the checkpoint to resume from."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from fulmen.errors import FulmenCheckpointError
from fulmen_ray.report import CHECKPOINT_FILE


def resume_checkpoint() -> Optional[str]:
    """The fulmen checkpoint file of the latest checkpoint this Ray Train job reported, as a
    local path for ``trainer.fit(..., ckpt_path=...)``; ``None`` on the first attempt.

    Ray restarts the whole worker group after a failure and hands each worker the latest
    checkpoint whose report every worker completed, so this is the newest complete one.
    Checkpoints on remote storage are downloaded into a temporary folder of this worker."""
    import pyarrow.fs
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        folder = checkpoint.path
    else:
        folder = checkpoint.to_directory(tempfile.mkdtemp(prefix="fulmen-ray-resume-"))
    path = os.path.join(folder, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise FulmenCheckpointError(
            f"the latest checkpoint Ray reported ({checkpoint.path}) has no {CHECKPOINT_FILE}: it was not "
            "reported by fulmen_ray.RayTrainReportCallback; resume it with your own code, or start the job "
            "with a new RunConfig(name=...)"
        )
    return path
