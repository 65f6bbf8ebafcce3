"""fulmen on Ray clusters: a fulmen Trainer or Fabric program as a Ray Train job.

Inside the training function Ray Train runs on each worker, ``strategy="ray"`` joins the
worker group (ranks from :class:`RayEnvironment`), :class:`RayTrainReportCallback` reports fulmen's
checkpoints and logged rows to Ray, and :func:`resume_checkpoint` finds where a restarted
group resumes. :func:`run` starts such a function on N workers. ``import fulmen_ray`` does not
import Ray; the names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RayDDPStrategy", "RayEnvironment", "RayTrainReportCallback", "resume_checkpoint", "run"]

_WHERE = {
    "RayDDPStrategy": "fulmen_ray.strategy",
    "RayEnvironment": "fulmen_ray.environment",
    "RayTrainReportCallback": "fulmen_ray.report",
    "resume_checkpoint": "fulmen_ray.checkpoint",
    "run": "fulmen_ray.launch",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fulmen_ray' has no attribute {name!r}")
