"""Registry names in configs: ``trainer.strategy: deepspeed_stage_2``, ``trainer.logger: mlflow``,
callbacks by registered name or ``class_path``.

The Trainer annotates these arguments ``Any`` because it takes a name, an object or a list.
A config needs more than ``Any`` to be checked, so the command line declares each as "a
registered name or an instance of the base class" (the base class makes ``class_path`` /
``init_args`` work, with the plugin's own classes too). The names themselves are checked
against the same registry the Trainer resolves them with (``fulmen.plugins.registry``),
before the Trainer is built, so the error can say which key held the bad name.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, List, Optional, Union

# Trainer argument → registry kind its string values name.
REGISTRY_KINDS = {
    "accelerator": "accelerator",
    "strategy": "strategy",
    "precision": "precision",
    "logger": "logger",
    "callbacks": "callback",
    "profiler": "profiler",
}


def trainer_types() -> Dict[str, Any]:
    """Types for the Trainer arguments annotated ``Any`` (or with types a config cannot
    hold, such as ``os.PathLike``); the base classes load here, not at ``import fulmen.cli``."""
    from fulmen.accelerators.base import Accelerator
    from fulmen.callbacks.base import Callback
    from fulmen.loggers.base import Logger
    from fulmen.precision.base import Precision
    from fulmen.profilers.base import Profiler
    from fulmen.strategies.base import Strategy

    return {
        # The class first: a str would also take a class_path given as JSON on the command line.
        "accelerator": Union[Accelerator, str],
        "strategy": Union[Strategy, str],
        "devices": Union[int, List[int], str],
        "precision": Optional[Union[Precision, int, str]],
        "logger": Optional[Union[bool, Logger, List[Union[Logger, str]], str]],
        "callbacks": Optional[Union[Callback, List[Union[Callback, str]], str]],
        "profiler": Optional[Union[Profiler, str]],
        "max_time": Optional[Union[str, Dict[str, int]]],
        "default_root_dir": Optional[str],
        "plugins": Optional[List[str]],
    }


def _names(value: Any) -> List[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item for item in items if isinstance(item, str)]


def check_registry_names(trainer_config: Dict[str, Any], allow=None, deny=None) -> None:
    """Raise ``FulmenCLIError`` for the first registered-name value that no loaded plugin
    provides, naming its key, the closest registered name and the registry's own hint
    (what to install, which plugin was switched off)."""
    from fulmen.cli.strict import FulmenCLIError
    from fulmen.errors import FulmenConfigError
    from fulmen.plugins import manager
    from fulmen.plugins.config import EXTRA_DEFAULT_NAMES  # "auto", "gpu", precision aliases: the connector's
    from fulmen.plugins.registry import canonical_precision

    wanted = [(key, name) for key in REGISTRY_KINDS for name in _names(trainer_config.get(key))
              if name not in EXTRA_DEFAULT_NAMES.get(REGISTRY_KINDS[key], ())]
    if not wanted:
        return
    registry = manager.build(allow=allow, deny=deny).registry
    for key, name in wanted:
        kind = REGISTRY_KINDS[key]
        lookup = canonical_precision(name) if kind == "precision" else name
        try:
            registry.get(kind, lookup)
        except FulmenConfigError as exc:
            close = difflib.get_close_matches(name, registry.names(kind), n=1)
            hint = f" Closest registered {kind}: {close[0]!r}." if close else ""
            raise FulmenCLIError(f"'trainer.{key}': {exc}{hint} `fulmen plugins` lists every name. Nothing was run.") from None
