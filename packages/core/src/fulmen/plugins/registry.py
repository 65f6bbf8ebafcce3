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
    "profiler",
)

# Spellings Lightning users type for a precision, mapped to the registered names. Kept here,
# beside the tables they index, because both the resolver (``fabric.connector``) and the
# configuration checks (``plugins.config``, ``plugins.check``) accept them.
PRECISION_ALIASES: Dict[str, str] = {
    "32": "32-true",
    "64": "64-true",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
    "half": "16-true",
    "double": "64-true",
}


def canonical_precision(name: str) -> str:
    """``"bf16"`` → ``"bf16-mixed"``; a registered name (or an unknown one) unchanged."""
    return PRECISION_ALIASES.get(name, name)


# The two tables below are the core's only record of the official packages' names, so that
# an error can print the line that installs one. Nothing else in the core names a backend.

# Names that an official fulmen package provides, with the line that installs it. A prefix
# ending in "*" matches every name that starts with it.
OFFICIAL_PROVIDERS: Dict[str, Dict[str, str]] = {
    "strategy": {
        "fsdp": "fulmen-strategy-fsdp",
        "fsdp*": "fulmen-strategy-fsdp",
        "hsdp": "fulmen-strategy-fsdp",
        "deepspeed*": "fulmen-strategy-deepspeed",
        "xla*": "fulmen-accelerator-xla",
        "ray": "fulmen-ray",
    },
    "accelerator": {"xla": "fulmen-accelerator-xla", "tpu": "fulmen-accelerator-xla"},
    "precision": {},
    "logger": {
        "mlflow": "fulmen-loggers[mlflow]",
        "wandb": "fulmen-loggers[wandb]",
        "tensorboard": "fulmen-loggers[tensorboard]",
    },
    "callback": {"ray_train_report": "fulmen-ray"},
    "environment": {"ray": "fulmen-ray"},
    "checkpoint_io": {},
    "profiler": {},
}


# Official plugins by entry-point name → their distribution, for the ``pip install`` line of a
# required plugin that is missing.
OFFICIAL_PLUGINS: Dict[str, str] = {
    "fsdp": "fulmen-strategy-fsdp",
    "deepspeed": "fulmen-strategy-deepspeed",
    "xla": "fulmen-accelerator-xla",
    "loggers": "fulmen-loggers",
    "ray": "fulmen-ray",
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


# Outcomes of an installed plugin that one Trainer/Fabric did not load.
DISABLED = "disabled"  # switched off by the allow/deny lists or the autoload switch
FAILED = "failed"  # its import raised, or its hooks do not match the specifications
INCOMPATIBLE = "incompatible"  # built for another fulmen

_OUTCOME_PHRASES = {DISABLED: "is disabled", FAILED: "failed to load", INCOMPATIBLE: "is incompatible"}


@dataclass
class UnloadedPlugin:
    """An installed plugin that one Trainer/Fabric did not load, why, and how to load it.

    Kept because the plugin that was denied, switched off or broken may be the very one
    that provides a name the user then asks for; the unknown-name error says so instead of
    leaving the user to guess.
    """

    plugin: str
    distribution: Optional[str]
    version: Optional[str]
    outcome: str  # DISABLED, FAILED or INCOMPATIBLE
    reason: str  # the recorded reason, verbatim
    remedy: str = ""  # what makes it load ("to load it, ..."); empty when the reason says it
    # What it registered when it last loaded in this process ({kind: names}); empty when it
    # never loaded, so whether it provides a name is unknown.
    registers: Dict[str, List[str]] = field(default_factory=dict)

    def describe(self, kind: str, name: str) -> str:
        """One line of the unknown-name error about this plugin."""
        dist = f"distribution {self.distribution or 'unknown'}" + (f" {self.version}" if self.version else "")
        phrase = _OUTCOME_PHRASES.get(self.outcome, f"is {self.outcome}")
        provides = "provides" if name in self.registers.get(kind, ()) else "might provide"
        # One line per plugin: a multi-line reason (pluggy's validation errors) is joined.
        reason = "; ".join(part.strip() for part in self.reason.splitlines() if part.strip())
        line = f"plugin {self.plugin!r} ({dist}) {phrase}: {reason}. It {provides} {kind} {name!r}"
        return line + (f"; {self.remedy}" if self.remedy else "")


@dataclass
class Registry:
    """All registered names of one Trainer/Fabric, plus why some plugins are missing."""

    tables: Dict[str, Dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    # plugin name → the installed plugin this Trainer/Fabric did not load (see ``mark_unloaded``)
    unloaded: Dict[str, UnloadedPlugin] = field(default_factory=dict)
    # plugin and distribution name → reason it could not be used (failed import, incompatible, disabled)
    unavailable: Dict[str, str] = field(default_factory=dict)
    # plugin name → why it failed or is incompatible (disabled plugins are not listed)
    failed_plugins: Dict[str, str] = field(default_factory=dict)
    # distribution → version, for plugins that loaded
    loaded_distributions: Dict[str, str] = field(default_factory=dict)

    def mark_unloaded(self, unloaded: UnloadedPlugin) -> None:
        """Record that an installed plugin was not loaded, for the errors and ``fulmen plugins``."""
        self.unloaded[unloaded.plugin] = unloaded
        self.unavailable[unloaded.plugin] = unloaded.reason
        if unloaded.distribution:
            self.unavailable[unloaded.distribution] = unloaded.reason
        if unloaded.outcome != DISABLED:
            self.failed_plugins[unloaded.plugin] = unloaded.reason

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
        """What exists, and where the name may come from: an official package (installed,
        switched off or missing) or, for other names, any installed plugin not loaded."""
        available = ", ".join(repr(n) for n in self.names(kind)) or "none"
        message = f"unknown {kind} {name!r}. Available: {available}."
        requirement = official_provider(kind, name)
        if requirement is not None:
            return message + self._official_hint(name, requirement)
        return message + self._unloaded_hint(kind, name)

    def _official_hint(self, name: str, requirement: str) -> str:
        dist = requirement.split("[")[0]
        if dist in self.loaded_distributions:
            return (
                f" {name!r} belongs to {dist}, which is installed "
                f"({self.loaded_distributions[dist]}) but does not register it; upgrade it: "
                f"pip install -U '{requirement}'"
            )
        unloaded = next((u for u in self.unloaded.values() if u.distribution == dist), None)
        reason = unloaded.reason if unloaded is not None else self.unavailable.get(dist)
        if reason:
            remedy = f"; {unloaded.remedy}" if unloaded is not None and unloaded.remedy else ""
            return f" {name!r} comes from {dist}, which could not be used: {reason}{remedy}"
        return (
            f" {name!r} is provided by an official package that is not installed: "
            f"pip install '{requirement}'"
        )

    def _unloaded_hint(self, kind: str, name: str) -> str:
        if not self.unloaded:
            return ""
        # Known providers first: they are the likely answer, the others only possible ones.
        ordered = sorted(
            self.unloaded.values(), key=lambda u: (name not in u.registers.get(kind, ()), u.plugin)
        )
        lines = "\n  - ".join(u.describe(kind, name) for u in ordered)
        return f" Installed plugins that were not loaded and may provide it:\n  - {lines}"
