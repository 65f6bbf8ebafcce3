"""Names → factories, one table per kind, each entry attributed to the plugin that gave it.

The registry is how a string such as ``strategy="fsdp"`` becomes an object. It is built per
Trainer/Fabric from the registration hooks, so what a user can ask for is exactly what the
loaded plugins offered, and an error can say both what exists and what to install.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

from fulmen.errors import FulmenConfigError, FulmenPluginWarning

KINDS = (
    "accelerator",
    "strategy",
    "precision",
    "logger",
    "callback",
    "environment",
    "checkpoint_io",
)

# Names that an official fulmen package provides, with the line that installs it. A prefix
# ending in "*" matches every name that starts with it.
OFFICIAL_PROVIDERS: Dict[str, Dict[str, str]] = {
    "strategy": {
        "fsdp": "fulmen-strategy-fsdp",
        "fsdp*": "fulmen-strategy-fsdp",
        "hsdp": "fulmen-strategy-fsdp",
        "deepspeed*": "fulmen-strategy-deepspeed",
        "xla*": "fulmen-accelerator-xla",
    },
    "accelerator": {"xla": "fulmen-accelerator-xla", "tpu": "fulmen-accelerator-xla"},
    "precision": {},
    "logger": {
        "mlflow": "fulmen-loggers[mlflow]",
        "wandb": "fulmen-loggers[wandb]",
        "tensorboard": "fulmen-loggers[tensorboard]",
    },
    "callback": {},
    "environment": {},
    "checkpoint_io": {},
}


def official_provider(kind: str, name: str) -> Optional[str]:
    """The pip requirement of the official package that provides ``name``, if any."""
    for pattern, requirement in OFFICIAL_PROVIDERS.get(kind, {}).items():
        if pattern.endswith("*") and name.startswith(pattern[:-1]) or pattern == name:
            return requirement
    return None


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    distribution: Optional[str]


@dataclass
class Registry:
    """All registered names of one Trainer/Fabric, plus why some plugins are missing."""

    tables: Dict[str, Dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    # plugin name → reason it could not be used (failed import, incompatible, disabled)
    unavailable: Dict[str, str] = field(default_factory=dict)
    # plugin name → why it failed or is incompatible (disabled plugins are not listed)
    failed_plugins: Dict[str, str] = field(default_factory=dict)
    # distribution → version, for plugins that loaded
    loaded_distributions: Dict[str, str] = field(default_factory=dict)

    def registrar(self, kind: str, plugin: str, distribution: Optional[str]):
        """The ``register`` callable handed to one plugin's registration hook."""

        def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
            if not isinstance(name, str) or not name:
                raise FulmenConfigError(
                    f"plugin {plugin!r} registered a {kind} with name {name!r}; "
                    "names must be non-empty strings"
                )
            if not callable(factory):
                raise FulmenConfigError(
                    f"plugin {plugin!r} registered {kind} {name!r} with a factory that is "
                    f"not callable ({factory!r}); pass a class or a function"
                )
            table = self.tables[kind]
            taken = table.get(name)
            if taken is not None:
                warnings.warn(
                    f"plugin {plugin!r} (distribution {distribution or 'unknown'}) tried to "
                    f"register {kind} {name!r}, which plugin {taken.plugin!r} (distribution "
                    f"{taken.distribution or 'unknown'}) already registered; the first one "
                    f"is kept. Fix: rename one of them, or deny one plugin with "
                    f"FULMEN_PLUGINS_DENY={plugin}",
                    FulmenPluginWarning,
                    stacklevel=2,
                )
                return
            table[name] = Entry(kind, name, factory, description, plugin, distribution)

        return register

    def names(self, kind: str) -> List[str]:
        return sorted(self.tables[kind])

    def entries(self, kind: str) -> Iterable[Entry]:
        return self.tables[kind].values()

    def get(self, kind: str, name: str) -> Entry:
        entry = self.tables[kind].get(name)
        if entry is None:
            raise FulmenConfigError(self.unknown_name_message(kind, name))
        return entry

    def create(self, kind: str, name: str, **options: Any) -> Any:
        return self.get(kind, name).factory(**options)

    def unknown_name_message(self, kind: str, name: str) -> str:
        available = ", ".join(repr(n) for n in self.names(kind)) or "none"
        message = f"unknown {kind} {name!r}. Available: {available}."
        requirement = official_provider(kind, name)
        if requirement is not None:
            dist = requirement.split("[")[0]
            reason = self.unavailable.get(dist)
            if dist in self.loaded_distributions:
                message += (
                    f" {name!r} belongs to {dist}, which is installed "
                    f"({self.loaded_distributions[dist]}) but does not register it; upgrade it: "
                    f"pip install -U '{requirement}'"
                )
            elif reason:
                message += f" {name!r} comes from {dist}, which could not be used: {reason}"
            else:
                message += (
                    f" {name!r} is provided by an official package that is not installed: "
                    f"pip install '{requirement}'"
                )
        broken = {plugin: reason for plugin, reason in self.failed_plugins.items()}
        if broken and requirement is None:
            listed = "; ".join(f"{plugin}: {reason}" for plugin, reason in sorted(broken.items()))
            message += f" Plugins that could not be used and may provide it: {listed}"
        return message
