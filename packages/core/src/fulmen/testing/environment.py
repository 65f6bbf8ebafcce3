"""Cluster environment conformance. The author gives the variables their scheduler sets in
one process of a job (``variables``) and what that process is (``expected``: any of
``world_size``, ``global_rank``, ``local_rank``, ``node_rank``, ``main_address``,
``main_port``, ``creates_processes_externally``).

* ``detect()`` is a classmethod returning a bool: False where no scheduler variable is set
  (unless the environment is a fallback that always matches), True under ``variables``;
* under ``variables``, every value equals ``expected``; ranks are ints with
  ``0 <= global_rank < world_size``, ``local_rank``/``node_rank >= 0``; ``main_address`` is
  a string and ``main_port`` an int in 0..65535;
* fulmen's detection, which tries every registered environment by ``detection_priority``,
  picks this one under ``variables`` (a higher-priority environment must not claim them);
* the object pickles (spawned ranks receive it) and has a ``repr``.
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, Mapping, Optional

from fulmen.testing._common import environment, fail, registry

# Variables of the schedulers fulmen knows, removed for the "no scheduler" check.
SCHEDULER_PREFIXES = ("SLURM_", "LSB_", "JSM_", "OMPI_", "PMI_", "PMIX_", "TORCHELASTIC_", "FULMEN_LAUNCHED")
RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK", "NODE_RANK",
              "LOCAL_WORLD_SIZE", "MPI_LOCALRANKID")


def environment_class(spec: Any) -> type:
    """The ClusterEnvironment subclass behind a registered name, ``"module:attr"`` or class."""
    from fulmen.environments.base import ClusterEnvironment
    from fulmen.plugins.discovery import import_object

    if isinstance(spec, str):
        if ":" in spec:
            return environment_class(import_object(spec))
        factory = registry().get("environment", spec).factory
        cls = factory.resolve() if hasattr(factory, "resolve") else factory
    else:
        cls = spec
    if not (isinstance(cls, type) and issubclass(cls, ClusterEnvironment)):
        raise fail("environment", spec, "is a ClusterEnvironment subclass", f"got {cls!r}")
    return cls


def _clean(variables: Mapping[str, str]):
    return environment(dict(variables), SCHEDULER_PREFIXES, RENDEZVOUS + tuple(variables))


def check_detection(spec: Any, variables: Mapping[str, str], always_detects: bool = False) -> None:
    """The detection rule: ``detect()`` is a bool, False without scheduler variables, True under ``variables``."""
    cls = environment_class(spec)
    with _clean({}):
        detected = cls.detect()
    if not isinstance(detected, bool):
        raise fail("environment", spec, "detect() returns a bool", f"got {detected!r}")
    if detected and not always_detects:
        raise fail("environment", spec, "detect() is False where no scheduler variable is set",
                   "it claimed a plain process; check for the variables only your scheduler sets")
    with _clean(variables):
        if not cls.detect():
            raise fail("environment", spec, "detect() is True under the scheduler's variables", f"variables: {dict(variables)}")


def check_values(spec: Any, variables: Mapping[str, str], expected: Mapping[str, Any]) -> None:
    """The value rule: under ``variables`` every value equals ``expected``; types and ranges hold; the object
    pickles."""
    cls = environment_class(spec)
    with _clean(variables):
        env = cls()
        values: Dict[str, Any] = {
            "world_size": env.world_size(),
            "global_rank": env.global_rank(),
            "local_rank": env.local_rank(),
            "node_rank": env.node_rank(),
            "main_address": env.main_address,
            "main_port": env.main_port,
            "creates_processes_externally": env.creates_processes_externally,
        }
        text = repr(env)
        restored = pickle.loads(pickle.dumps(env))
        restored_world = restored.world_size()
    unknown = set(expected) - set(values)
    if unknown:
        raise AssertionError(f"expected= names {sorted(unknown)}; known: {sorted(values)}")
    for key, want in expected.items():
        if values[key] != want:
            raise fail("environment", spec, f"{key} is read from the scheduler's variables",
                       f"expected {want!r}, got {values[key]!r} (variables: {dict(variables)})")
    ints = ("world_size", "global_rank", "local_rank", "node_rank", "main_port")
    for key in ints:
        if not isinstance(values[key], int) or isinstance(values[key], bool):
            raise fail("environment", spec, f"{key} is an int", f"got {values[key]!r}")
    if not 0 <= values["global_rank"] < values["world_size"]:
        raise fail("environment", spec, "0 <= global_rank < world_size", f"{values}")
    if values["local_rank"] < 0 or values["node_rank"] < 0:
        raise fail("environment", spec, "local_rank and node_rank are >= 0", f"{values}")
    if not isinstance(values["main_address"], str) or not values["main_address"]:
        raise fail("environment", spec, "main_address is a non-empty string", f"got {values['main_address']!r}")
    if not 0 <= values["main_port"] <= 65535:
        raise fail("environment", spec, "main_port is in 0..65535", f"got {values['main_port']}")
    if not isinstance(values["creates_processes_externally"], bool):
        raise fail("environment", spec, "creates_processes_externally is a bool", f"got {values['creates_processes_externally']!r}")
    if not text or restored_world != values["world_size"]:
        raise fail("environment", spec, "the object pickles (spawned ranks receive it) and has a repr", f"repr {text!r}")


def check_priority(name: str, variables: Mapping[str, str]) -> None:
    """The priority rule: fulmen's detection picks this environment under ``variables``."""
    from fulmen.fabric.connector import detect_environment

    cls = environment_class(name)
    with _clean(variables):
        chosen = detect_environment(registry())
    if type(chosen) is not cls:
        raise fail("environment", name, "fulmen's detection (by detection_priority) picks it under its variables",
                   f"{type(chosen).__name__} was chosen instead; raise {cls.__name__}.detection_priority above it, "
                   "or make the other's detect() stricter")


def check_cluster_environment(
    spec: Any, variables: Mapping[str, str], expected: Optional[Mapping[str, Any]] = None, always_detects: bool = False
) -> None:
    """Every cluster environment rule."""
    check_detection(spec, variables, always_detects)
    check_values(spec, variables, expected or {})
    if isinstance(spec, str) and ":" not in spec:
        check_priority(spec, variables)
