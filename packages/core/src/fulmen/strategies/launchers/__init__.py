"""Starting the processes of a multi-process strategy when nobody else did."""

from fulmen.strategies.launchers.multiprocessing import MultiprocessingLauncher
from fulmen.strategies.launchers.subprocess_script import SubprocessScriptLauncher

__all__ = ["MultiprocessingLauncher", "SubprocessScriptLauncher"]
