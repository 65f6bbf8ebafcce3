"""Reading the configuration of a curated distribution: what a platform team pins for its users.

A configuration says which plugins may load (``allow``), which never load (``deny``, also
spelled ``block``), which must be installed and at which versions (``require``), and the
accelerator, strategy, precision and logger a ``Trainer``/``Fabric`` uses when the user
passes none (``defaults``). It is read from, lowest precedence first:

1. configurations shipped by installed distributions: an entry point in the
   ``fulmen.config`` group names a package holding a ``fulmen.toml`` (or a ``module:attr``
   that is a dict or a path), so a meta-package applies its settings on install;
2. the project file: ``FULMEN_CONFIG=path`` if set (``none`` switches project files off),
   otherwise the nearest ``fulmen.toml`` or ``pyproject.toml`` with a ``[tool.fulmen]``
   table, from the working directory upward;
3. the environment: ``FULMEN_REQUIRE_PLUGINS``, ``FULMEN_DEFAULT_ACCELERATOR`` /
   ``_STRATEGY`` / ``_PRECISION`` / ``_LOGGER`` (``FULMEN_PLUGINS_ALLOW`` and
   ``FULMEN_PLUGINS_DENY`` are read by ``fulmen.plugins.policy`` itself).

Layers combine so that a platform keeps control: deny lists add up and cannot be undone by
a later layer; allow lists add up (a project may allow one more plugin); requirements on the
same plugin must all hold; a default from a higher layer replaces a lower one.

This module only reads, validates and merges: every error names the file (or entry point,
or variable) and the key. What the merged configuration makes happen, the allow and deny
lists, the required plugins, the defaults, is decided elsewhere (``fulmen.plugins.policy``
and ``fulmen.plugins.config``), so reading a configuration never imports a plugin.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from fulmen.errors import FulmenConfigError

CONFIG_ENTRY_POINT_GROUP = "fulmen.config"
CONFIG_FILE = "fulmen.toml"
ENV_CONFIG = "FULMEN_CONFIG"
ENV_REQUIRE = "FULMEN_REQUIRE_PLUGINS"
DEFAULT_KINDS = ("accelerator", "strategy", "precision", "logger")
ENV_DEFAULTS = {kind: f"FULMEN_DEFAULT_{kind.upper()}" for kind in DEFAULT_KINDS}
KEYS = ("allow", "deny", "block", "require", "defaults")


@dataclass(frozen=True)
class Layer:
    """One source of settings: a file, a distribution's shipped config, or the environment."""

    source: str
    allow: Optional[frozenset] = None
    deny: frozenset = frozenset()
    require: Tuple[Requirement, ...] = ()
    defaults: Tuple[Tuple[str, Any], ...] = ()


@dataclass
class RequiredPlugin:
    """A required plugin after merging: every layer's specifier must hold."""

    name: str
    specifier: SpecifierSet
    sources: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


@dataclass
class PluginConfig:
    """The merged configuration every Trainer/Fabric of this process starts from."""

    layers: List[Layer] = field(default_factory=list)
    allow: Optional[set] = None
    deny: set = field(default_factory=set)
    require: Dict[str, RequiredPlugin] = field(default_factory=dict)
    defaults: Dict[str, Tuple[Any, str]] = field(default_factory=dict)  # kind → (value, source)

    @property
    def sources(self) -> List[str]:
        return [layer.source for layer in self.layers]

    def default(self, kind: str) -> Tuple[Any, Optional[str]]:
        """``(value, source)`` of the configured default for ``kind``; ``(None, None)`` if unset."""
        value, source = self.defaults.get(kind, (None, None))
        return value, source

    def describe(self) -> Dict[str, Any]:
        return {
            "sources": self.sources,
            "allow": sorted(self.allow) if self.allow is not None else None,
            "deny": sorted(self.deny),
            "require": {name: str(req.specifier) for name, req in self.require.items()},
            "defaults": {kind: value for kind, (value, _) in self.defaults.items()},
        }


_lock = threading.Lock()
_file_cache: Dict[Tuple[str, int, int], Optional[Layer]] = {}
_installed_cache: Optional[List[Layer]] = None


def active(start: Optional[os.PathLike] = None) -> PluginConfig:
    """The configuration in effect for a Trainer created now (files are re-read when they
    change; installed distributions' configs are read once, until :func:`forget_installed`)."""
    layers = installed_layers()
    project = project_layer(start)
    if project is not None:
        layers.append(project)
    env = environment_layer()
    if env is not None:
        layers.append(env)
    return merge(layers)


def merge(layers: Sequence[Layer]) -> PluginConfig:
    config = PluginConfig(layers=list(layers))
    for layer in layers:
        if layer.allow is not None:
            config.allow = (config.allow or set()) | set(layer.allow)
        config.deny |= set(layer.deny)
        for req in layer.require:
            key = req.name
            found = next((k for k in config.require if canonicalize_name(k) == canonicalize_name(key)), None)
            if found is None:
                config.require[key] = RequiredPlugin(key, SpecifierSet(str(req.specifier)), [layer.source])
            else:
                merged = config.require[found]
                merged.specifier = merged.specifier & req.specifier
                merged.sources.append(layer.source)
        for kind, value in layer.defaults:
            config.defaults[kind] = (value, layer.source)
    return config


def find_project_file(start: Optional[os.PathLike] = None) -> Optional[Path]:
    """``FULMEN_CONFIG``, or the nearest ``fulmen.toml`` / ``pyproject.toml`` with a
    ``[tool.fulmen]`` table from ``start`` (the working directory) upward."""
    explicit = os.environ.get(ENV_CONFIG, "").strip()
    if explicit:
        if explicit.lower() == "none":
            return None
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FulmenConfigError(f"{ENV_CONFIG}={explicit!r} names no file; point it at a fulmen.toml or pyproject.toml")
        return path
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _cached_file_layer(candidate) is not None:
            return candidate
    return None


def project_layer(start: Optional[os.PathLike] = None) -> Optional[Layer]:
    path = find_project_file(start)
    if path is None:
        return None
    layer = _cached_file_layer(path)
    if layer is None:  # FULMEN_CONFIG pointed at a pyproject.toml without the table
        raise FulmenConfigError(f"{path} has no [tool.fulmen] table ({ENV_CONFIG} points at it)")
    return layer


def _cached_file_layer(path: Path) -> Optional[Layer]:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key not in _file_cache:
            _file_cache[key] = _file_layer(path)
        return _file_cache[key]


def _file_layer(path: Path) -> Optional[Layer]:
    """A ``pyproject.toml``'s ``[tool.fulmen]`` table (None without one); any other file's
    top level, or its ``[tool.fulmen]`` table if it has one."""
    data = _read_toml(path)
    table = data.get("tool", {}).get("fulmen") if isinstance(data.get("tool"), dict) else None
    if table is not None:
        return parse_table(table, f"{path} [tool.fulmen]")
    if path.name == "pyproject.toml":
        return None
    return parse_table(data, str(path))


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise FulmenConfigError(
                f"reading {path} needs Python 3.11 or the tomli package: pip install tomli"
            ) from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise FulmenConfigError(f"{path} is not valid TOML: {exc}") from None


def parse_table(table: Any, source: str) -> Layer:
    """Validate one ``[tool.fulmen]``-shaped table; errors name the source and the key."""
    if not isinstance(table, dict):
        raise FulmenConfigError(f"{source}: the fulmen configuration must be a table, not {type(table).__name__}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise FulmenConfigError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known keys: {', '.join(KEYS)}"
        )
    allow = _names(table["allow"], f"{source}: allow") if "allow" in table else None
    deny = _names(table.get("deny", []), f"{source}: deny") | _names(table.get("block", []), f"{source}: block")
    require = _requirements(table.get("require", {}), source)
    defaults = _defaults(table.get("defaults", {}), source)
    return Layer(source, None if allow is None else frozenset(allow), frozenset(deny), require, defaults)


def _names(value: Any, where: str) -> set:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise FulmenConfigError(f"{where} must be a list of plugin or distribution names, got {value!r}")
    return {v.strip() for v in value}


def _requirements(value: Any, source: str) -> Tuple[Requirement, ...]:
    if isinstance(value, dict):
        lines = []
        for name, spec in value.items():
            if not isinstance(spec, str):
                raise FulmenConfigError(
                    f"{source}: require.{name} must be a version specifier string such as \">=0.1,<0.2\" "
                    f"(\"\" for any version), got {spec!r}"
                )
            spec = spec.strip()
            lines.append(name if spec in ("", "*") else f"{name}{'' if spec[0] in '<>=!~;' else '=='}{spec}")
    elif isinstance(value, list):
        lines = value
    else:
        raise FulmenConfigError(f"{source}: require must be a table {{name = \"specifier\"}} or a list of requirements")
    out = []
    for line in lines:
        try:
            req = Requirement(str(line))
        except InvalidRequirement as exc:
            raise FulmenConfigError(f"{source}: require entry {line!r} is not a valid requirement: {exc}") from None
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # e.g. "; sys_platform == 'linux'" on another platform
        out.append(req)
    return tuple(out)


def _defaults(value: Any, source: str) -> Tuple[Tuple[str, Any], ...]:
    if not isinstance(value, dict):
        raise FulmenConfigError(f"{source}: defaults must be a table")
    unknown = sorted(set(value) - set(DEFAULT_KINDS))
    if unknown:
        raise FulmenConfigError(
            f"{source}: unknown default(s) {', '.join(repr(k) for k in unknown)}; known: {', '.join(DEFAULT_KINDS)}"
        )
    out = []
    for kind, item in value.items():
        ok = isinstance(item, str) and item.strip()
        if kind == "precision":
            ok = ok or (isinstance(item, int) and not isinstance(item, bool))
            item = str(item) if ok else item
        if kind == "logger":
            ok = ok or item is False or (isinstance(item, list) and all(isinstance(v, str) for v in item))
        if not ok:
            raise FulmenConfigError(f"{source}: defaults.{kind} = {item!r} is not a name")
        out.append((kind, item))
    return tuple(out)


def parse_requirement_list(text: str) -> List[str]:
    """``"fsdp>=0.1,<0.2, loggers"`` → ``["fsdp>=0.1,<0.2", "loggers"]``: a comma followed by
    a version operator continues the specifier, any other comma starts a new requirement."""
    out: List[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if out and part[0] in "<>=!~":
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def environment_layer() -> Optional[Layer]:
    require_text = os.environ.get(ENV_REQUIRE, "").strip()
    defaults = []
    for kind, var in ENV_DEFAULTS.items():
        value = os.environ.get(var, "").strip()
        if not value:
            continue
        if kind == "logger":
            if value.lower() in ("false", "none", "0"):
                defaults.append((kind, False))
                continue
            names = [v.strip() for v in value.split(",") if v.strip()]
            defaults.append((kind, names[0] if len(names) == 1 else names))
        else:
            defaults.append((kind, value))
    if not require_text and not defaults:
        return None
    source = "environment (" + ", ".join(
        [ENV_REQUIRE] * bool(require_text) + [ENV_DEFAULTS[kind] for kind, _ in defaults]
    ) + ")"
    require = _requirements(parse_requirement_list(require_text), source) if require_text else ()
    return Layer(source, None, frozenset(), require, tuple(defaults))


def installed_layers() -> List[Layer]:
    """Configurations shipped by installed distributions (``fulmen.config`` entry points),
    read once per process (``discovery.rescan()`` calls :func:`forget_installed`), in
    distribution-name order."""
    global _installed_cache
    with _lock:
        if _installed_cache is not None:
            return list(_installed_cache)
    layers = []
    entry_points = sorted(
        metadata.entry_points(group=CONFIG_ENTRY_POINT_GROUP),
        key=lambda ep: (_dist_name(ep) or "", ep.name),
    )
    for ep in entry_points:
        dist = _dist_name(ep)
        version = getattr(getattr(ep, "dist", None), "version", None)
        source = f"{dist or ep.name} {version or ''}".strip() + f" ({CONFIG_ENTRY_POINT_GROUP} entry point {ep.name!r})"
        layers.append(parse_table(_entry_point_table(ep, source), source))
    with _lock:
        _installed_cache = layers
    return list(layers)


def forget_installed() -> None:
    """Read the installed distributions' configurations again next time (after a pip
    install in a long-lived process, and in tests); called by ``discovery.rescan()``."""
    global _installed_cache
    with _lock:
        _installed_cache = None


def _dist_name(ep: Any) -> Optional[str]:
    dist = getattr(ep, "dist", None)
    return canonicalize_name(dist.metadata["Name"]) if dist is not None else None


def _entry_point_table(ep: Any, source: str) -> Dict[str, Any]:
    module_name, _, attr = ep.value.partition(":")
    try:
        if not attr:
            from importlib import resources

            resource = resources.files(module_name.strip()) / CONFIG_FILE
            if not resource.is_file():
                raise FulmenConfigError(f"{source}: package {module_name!r} holds no {CONFIG_FILE}")
            with resources.as_file(resource) as path:
                return _table_of_file(Path(path))
        obj = importlib.import_module(module_name.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except FulmenConfigError:
        raise
    except Exception as exc:
        raise FulmenConfigError(f"{source}: cannot read the configuration {ep.value!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return _table_of_file(Path(obj))
    raise FulmenConfigError(f"{source}: {ep.value!r} is a {type(obj).__name__}; expected a dict or a path to a TOML file")


def _table_of_file(path: Path) -> Dict[str, Any]:
    data = _read_toml(path)
    tool = data.get("tool")
    return tool["fulmen"] if isinstance(tool, dict) and "fulmen" in tool else data
