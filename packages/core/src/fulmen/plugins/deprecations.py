"""Every deprecated hook and hook argument, in one place.

The plugin API is versioned with the ``fulmen`` distribution (semver) and hook changes are
additive: a hook or an argument is first listed here for at least one minor release, which
makes pluggy warn (``warn_on_impl`` / ``warn_on_impl_args``) at the line of every plugin,
callback or module that implements it, and only then removed in the next major release.
``docs/plugins.md`` lists the same entries; a test keeps the two in step.

To deprecate a hook, add ``"hook_name": Deprecation(since="0.3", removal="1.0",
replacement="other_hook", reason="...")`` to ``DEPRECATED_HOOKS``; for an argument, add
``("hook_name", "argument"): Deprecation(...)`` to ``DEPRECATED_ARGUMENTS``. Nothing else
changes: the manager applies the lists to the specifications when it is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from fulmen.errors import FulmenWarning


class FulmenDeprecationWarning(FulmenWarning, DeprecationWarning):
    """A plugin, callback or module implements a deprecated hook or hook argument."""


@dataclass(frozen=True)
class Deprecation:
    since: str
    removal: str
    replacement: Optional[str] = None
    reason: str = ""

    def message(self, what: str) -> str:
        text = f"{what} is deprecated since fulmen {self.since} and will be removed in fulmen {self.removal}"
        if self.replacement:
            text += f"; implement {self.replacement} instead"
        if self.reason:
            text += f" ({self.reason})"
        return text


# hook name → Deprecation. Empty: no hook of the first plugin API (0.1) is deprecated yet.
DEPRECATED_HOOKS: Dict[str, Deprecation] = {}

# (hook name, argument name) → Deprecation.
DEPRECATED_ARGUMENTS: Dict[Tuple[str, str], Deprecation] = {}


def warning_for_hook(name: str) -> FulmenDeprecationWarning:
    return FulmenDeprecationWarning(DEPRECATED_HOOKS[name].message(f"the hook {name!r}"))


def warning_for_argument(hook: str, argument: str) -> FulmenDeprecationWarning:
    return FulmenDeprecationWarning(
        DEPRECATED_ARGUMENTS[(hook, argument)].message(f"the argument {argument!r} of the hook {hook!r}")
    )


def apply(manager: Any) -> None:
    """Mark the deprecated specifications of ``manager`` so that pluggy warns on
    registration, as if the hookspec had been declared with ``warn_on_impl``."""
    for name in DEPRECATED_HOOKS:
        spec = _spec(manager, name)
        # Only the per-manager HookSpec object: ``spec.opts`` is the hookspec function's own
        # marker dict, shared by every manager in the process.
        spec.warn_on_impl = warning_for_hook(name)
    by_hook: Dict[str, Dict[str, Warning]] = {}
    for hook, argument in DEPRECATED_ARGUMENTS:
        by_hook.setdefault(hook, {})[argument] = warning_for_argument(hook, argument)
    for hook, warnings_by_arg in by_hook.items():
        spec = _spec(manager, hook)
        unknown = set(warnings_by_arg) - set(spec.argnames)
        if unknown:
            raise AssertionError(f"deprecations.py lists argument(s) {sorted(unknown)} that hook {hook!r} does not have")
        spec.warn_on_impl_args = warnings_by_arg


def _spec(manager: Any, name: str) -> Any:
    caller = getattr(manager.hook, name, None)
    if caller is None or caller.spec is None:
        raise AssertionError(f"deprecations.py lists hook {name!r}, which fulmen.hookspecs does not define")
    return caller.spec
