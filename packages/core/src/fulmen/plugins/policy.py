"""Which installed plugins one Trainer/Fabric loads: the allow list, the deny list, the
autoload switch, and the exemption for required plugins.

All of the rule lives here, in one place, because three callers need the same answer: the
plugin manager (what to import), ``fulmen plugins --check`` (what to report) and the
errors (why a name is missing and how to get it). The rule, in order:

1. a plugin on a deny list never loads (lists from the configuration, ``FULMEN_PLUGINS_DENY``
   and ``deny_plugins=`` add up, so nothing later can undo a platform's deny);
2. with an allow list, only the plugins on it load (lists add up too);
3. with ``FULMEN_DISABLE_PLUGIN_AUTOLOAD`` set, only plugins named in an allow list load;
4. a plugin the configuration requires loads despite 2 and 3 (requiring it is asking for
   it by name), never despite 1.

A plugin is named by its entry-point name or its distribution's name (any spelling that
``packaging`` canonicalises alike). This module reads the configuration's lists
(``fulmen.plugins.settings``) but not the installed plugins: it judges the records that
discovery hands it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Tuple

from packaging.utils import canonicalize_name

from fulmen.plugins import settings

ENV_DISABLE_AUTOLOAD = "FULMEN_DISABLE_PLUGIN_AUTOLOAD"
ENV_ALLOW = "FULMEN_PLUGINS_ALLOW"
ENV_DENY = "FULMEN_PLUGINS_DENY"

# Why a plugin is switched off (``Exclusion.rule``).
DENIED = "denied"
NOT_ALLOWED = "not allowed"
AUTOLOAD_OFF = "autoload off"


@dataclass(frozen=True)
class Exclusion:
    """Why one plugin does not load for one Trainer/Fabric, and what would make it load."""

    rule: str  # DENIED, NOT_ALLOWED or AUTOLOAD_OFF
    reason: str  # shown by ``fulmen plugins`` and in errors
    remedy: str  # "to load it, ..."


def split_names(value: Optional[str | Iterable[str]]) -> Optional[set]:
    """``"a, b"`` or ``["a", "b"]`` → ``{"a", "b"}``; ``None``/empty → ``None``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip() for item in items if str(item).strip()}
    return names or None


def autoload_disabled() -> bool:
    return os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() not in ("", "0", "false", "no")


def is_listed(record: Any, names: Optional[set]) -> bool:
    """Does one of ``names`` designate this plugin (entry-point or distribution name)?"""
    if not names:
        return False
    canonical = {canonicalize_name(n) for n in names}
    return record.name in names or (
        record.distribution is not None and canonicalize_name(record.distribution) in canonical
    )


def effective_lists(
    allow: Optional[Sequence[str] | str] = None, deny: Optional[Sequence[str] | str] = None
) -> Tuple[Optional[set], Optional[set]]:
    """Combine the configuration's lists, the environment's and a Trainer's arguments: each
    adds to the others, so nothing can undo a deny. ``None`` allow means "no allow list"."""
    cfg = settings.active()
    env_allow = split_names(os.environ.get(ENV_ALLOW))
    env_deny = split_names(os.environ.get(ENV_DENY))
    arg_allow = split_names(allow)
    arg_deny = split_names(deny)
    allows = [names for names in (cfg.allow, env_allow, arg_allow) if names is not None]
    allow_set = set().union(*allows) if allows else None
    deny_set = set(cfg.deny) | (env_deny or set()) | (arg_deny or set())
    return allow_set, deny_set or None


def requirement_for(config: Optional[settings.PluginConfig], record: Any) -> Optional[settings.RequiredPlugin]:
    """The configuration's requirement on this plugin, if it has one."""
    if config is None:
        return None
    for key, requirement in config.require.items():
        if is_listed(record, {key}):
            return requirement
    return None


def is_required(config: Optional[settings.PluginConfig], record: Any) -> bool:
    return requirement_for(config, record) is not None


def exclusion(
    record: Any, allow: Optional[set], deny: Optional[set], config: Optional[settings.PluginConfig] = None
) -> Optional[Exclusion]:
    """Why this plugin does not load with these lists (and this configuration's
    requirements), or None when it loads."""
    name = record.name
    if is_listed(record, deny):
        return Exclusion(
            DENIED,
            "denied by the deny list (FULMEN_PLUGINS_DENY or deny_plugins=)",
            f"to load it, take {name!r} off the deny list (FULMEN_PLUGINS_DENY, deny_plugins= "
            f"or the deny of the fulmen configuration)",
        )
    if is_required(config, record):
        return None
    if allow is not None and not is_listed(record, allow):
        return Exclusion(
            NOT_ALLOWED,
            "not in the allow list (FULMEN_PLUGINS_ALLOW or allow_plugins=)",
            f"to load it, add {name!r} to the allow list (FULMEN_PLUGINS_ALLOW or allow_plugins=), "
            f"or ask for it with plugins=[{name!r}]",
        )
    if autoload_disabled() and not is_listed(record, allow):
        return Exclusion(
            AUTOLOAD_OFF,
            f"{ENV_DISABLE_AUTOLOAD} is set; name the plugin in FULMEN_PLUGINS_ALLOW to load it",
            f"to load it, unset {ENV_DISABLE_AUTOLOAD}, name {name!r} in FULMEN_PLUGINS_ALLOW or "
            f"allow_plugins=, or ask for it with plugins=[{name!r}]",
        )
    return None


def disabled_reason(
    record: Any, allow: Optional[set], deny: Optional[set], config: Optional[settings.PluginConfig] = None
) -> Optional[str]:
    """The reason of :func:`exclusion`, or None when the plugin loads."""
    found = exclusion(record, allow, deny, config)
    return found.reason if found is not None else None
