"""Finding plugins through the ``fulmen.plugins`` entry-point group.

Metadata is scanned once per process; a plugin is imported at most once, and only after
its distribution's declared requirement on ``fulmen`` was checked against the installed
fulmen. Every outcome is recorded so ``fulmen plugins`` and error messages can explain it.
A broken plugin is a warning, never a crash: training with the remaining plugins is better
than no training, unless the user asked for the broken one by name (see ``require``).

Which of the found plugins a Trainer/Fabric loads (allow and deny lists, the autoload
switch) is not decided here but in ``fulmen.plugins.policy``; discovery only finds, checks
and imports.
"""

from __future__ import annotations

import importlib
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Dict, List, Optional

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fulmen.errors import FulmenPluginError, FulmenPluginWarning
from fulmen.plugins import settings

# Re-exported: callers written before ``policy`` existed import these from here. New code
# imports them from ``fulmen.plugins.policy``, which owns them.
from fulmen.plugins.policy import (
    ENV_ALLOW,
    ENV_DENY,
    ENV_DISABLE_AUTOLOAD,
    effective_lists,
    is_listed,
)

ENTRY_POINT_GROUP = "fulmen.plugins"

LOADED = "loaded"
FAILED = "failed"
INCOMPATIBLE = "incompatible"
DISABLED = "disabled"


@dataclass
class PluginRecord:
    """What happened to one entry point; shared by every Trainer in the process."""

    name: str
    distribution: Optional[str]
    version: Optional[str]
    target: str
    status: str = "found"
    reason: str = ""
    requirement: str = ""
    plugin: Any = None
    registers: Dict[str, List[str]] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "requirement": self.requirement,
            "registers": {k: sorted(v) for k, v in self.registers.items() if v},
        }


_lock = threading.Lock()
_records: Optional[Dict[str, PluginRecord]] = None


def fulmen_version() -> str:
    try:
        return metadata.version("fulmen")
    except metadata.PackageNotFoundError:  # running from a source tree
        from fulmen import __version__

        return __version__


def _fulmen_requirement(dist: metadata.Distribution) -> Optional[Requirement]:
    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != "fulmen":
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # only needed for an extra; not a requirement of the plugin itself
        return req
    return None


def _check_compatible(record: PluginRecord, dist: Optional[metadata.Distribution]) -> None:
    if dist is None:
        return
    req = _fulmen_requirement(dist)
    if req is None or not str(req.specifier):
        return
    record.requirement = f"fulmen{req.specifier}"
    installed = fulmen_version()
    try:
        ok = req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        ok = True
    if not ok:
        record.status = INCOMPATIBLE
        record.reason = (
            f"{record.distribution} requires {record.requirement} but found "
            f"fulmen {installed}; install a {record.distribution} release built for "
            f"fulmen {installed}, or a fulmen that matches {req.specifier}"
        )


def _scan() -> Dict[str, PluginRecord]:
    records: Dict[str, PluginRecord] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = canonicalize_name(dist.metadata["Name"]) if dist is not None else None
        version = dist.version if dist is not None else None
        if ep.name in records:
            # Two distributions claim one plugin name; the first found wins, loudly.
            first = records[ep.name]
            warnings.warn(
                f"plugin name {ep.name!r} is declared by {dist_name} and by "
                f"{first.distribution}; only {first.distribution}'s is used. Fix: uninstall "
                f"one of them or rename the entry point",
                FulmenPluginWarning,
                stacklevel=3,
            )
            continue
        record = PluginRecord(ep.name, dist_name, version, ep.value)
        record._entry_point = ep  # type: ignore[attr-defined]
        _check_compatible(record, dist)
        records[ep.name] = record
    return records


def records() -> Dict[str, PluginRecord]:
    """Every entry point of the group, scanned once per process."""
    global _records
    with _lock:
        if _records is None:
            _records = _scan()
        return _records


def rescan() -> Dict[str, PluginRecord]:
    """Forget what was found, the installed distributions' configurations included (for
    tests and long-lived processes that pip-installed)."""
    global _records
    with _lock:
        _records = None
    settings.forget_installed()
    return records()


def load(record: PluginRecord) -> Optional[Any]:
    """Import the plugin once; on failure record why and warn, never raise."""
    with _lock:
        if record.status in (LOADED, FAILED, INCOMPATIBLE):
            if record.status == INCOMPATIBLE and not getattr(record, "_warned", False):
                record._warned = True  # type: ignore[attr-defined]
                warnings.warn(
                    f"skipping fulmen plugin {record.name!r}: {record.reason}",
                    FulmenPluginWarning,
                    stacklevel=4,
                )
            return record.plugin
        try:
            record.plugin = record._entry_point.load()  # type: ignore[attr-defined]
            record.status = LOADED
            record.reason = ""
        except BaseException as exc:  # a plugin's import may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            record.status = FAILED
            last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
            record.reason = f"import of {record.target} raised {type(exc).__name__}: {exc}{where}"
            warnings.warn(
                f"fulmen plugin {record.name!r} from {record.distribution or 'unknown'} failed "
                f"to load and is skipped: {record.reason}. Fix: reinstall or upgrade "
                f"{record.distribution or 'the plugin'}, or deny it with "
                f"FULMEN_PLUGINS_DENY={record.name}",
                FulmenPluginWarning,
                stacklevel=4,
            )
        return record.plugin


def how_to_fix(record: PluginRecord) -> str:
    """What makes a failed or incompatible plugin load, for errors that name it ("" when its
    reason already says, as an incompatible one's does)."""
    if record.status != FAILED:
        return ""
    dist = record.distribution or "the plugin's distribution"
    return (
        f"to load it, fix that error, for example by reinstalling or upgrading {dist} "
        f"(pip install -U '{dist}')"
    )


def require(name: str) -> Any:
    """Load a plugin the user asked for by name; its recorded failure becomes the error."""
    record = records().get(name)
    if record is None:
        raise FulmenPluginError(
            f"no fulmen plugin named {name!r} is installed (entry-point group "
            f"{ENTRY_POINT_GROUP!r}); installed: {', '.join(sorted(records())) or 'none'}"
        )
    plugin = load(record)
    if plugin is None:
        raise FulmenPluginError(f"fulmen plugin {name!r} cannot be used: {record.reason}")
    return plugin


def import_object(path: str) -> Any:
    """``"pkg.module:attr"`` or ``"pkg.module"`` → the object (used for explicit plugins)."""
    module_name, _, attr = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj
