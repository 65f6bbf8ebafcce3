"""The API reference (``docs/reference/*.md``) against the code, without building the site.

Every public name must appear in some ``:::`` directive, so a new public class cannot be
left out of the reference; and every public class, function and method must have a
docstring, so that the reference says what each one is for. ``nox -s docs`` builds the
site itself (mkdocs is not installed in the default test session).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"

# The modules whose ``__all__`` is the public API (those without one are skipped).
PUBLIC_MODULES = [
    "fulmen",
    "fulmen.callbacks",
    "fulmen.strategies",
    "fulmen.accelerators",
    "fulmen.precision",
    "fulmen.environments",
    "fulmen.loggers",
    "fulmen.io",
    "fulmen.profilers",
    "fulmen.finetune",
    "fulmen.testing",
    "fulmen.utilities",
    "fulmen_fsdp",
    "fulmen_loggers",
    "fulmen_ray",
]
# Where our own code lives: a method defined anywhere else (torch, object) is not ours to document.
OUR_PACKAGES = ("fulmen", "fulmen_fsdp", "fulmen_loggers", "fulmen_ray")

DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)[ \t]*$", re.MULTILINE)
MEMBERS = re.compile(r"^[ \t]+members:[ \t]*(.+?)[ \t]*$")


def directives() -> Dict[str, Optional[Set[str]]]:
    """{target: members it renders} of every ``:::`` directive; ``None`` means every member
    (no ``members`` option), an empty set none (``members: false``)."""
    found: Dict[str, Optional[Set[str]]] = {}
    for page in sorted(REFERENCE.glob("*.md")):
        lines = page.read_text().splitlines()
        for index, line in enumerate(lines):
            match = DIRECTIVE.match(line)
            if not match:
                continue
            members: Optional[Set[str]] = None
            for option in lines[index + 1:]:
                if option.strip() and not option[0].isspace():
                    break  # the directive's indented options end here
                listed = MEMBERS.match(option)
                if listed:
                    value = listed.group(1)
                    members = set() if value == "false" else set(re.findall(r"\w+", value)) if value != "true" else None
            found[match.group(1)] = members
    return found


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # a distribution that is not installed has no names to check
        pytest.skip(f"{module} is not importable: {exc}")


def public_names() -> Iterator[Tuple[str, str, object]]:
    """(module, name, object) for each name in the ``__all__`` lists (dunders left out)."""
    for module_name in PUBLIC_MODULES:
        module = _import(module_name)
        for name in getattr(module, "__all__", ()):
            if not name.startswith("__"):
                yield module_name, name, getattr(module, name)


def homes(obj: object, name: str) -> Set[str]:
    """Dotted paths under which a directive may name ``obj``: its definition and every module
    of ours that holds it under ``name`` (a package re-exporting it)."""
    import sys

    paths = set()
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and qualname and (inspect.isclass(obj) or inspect.isfunction(obj)):
        paths.add(f"{module}.{qualname}")
    for module_name, loaded in list(sys.modules.items()):
        if module_name.split(".")[0] in OUR_PACKAGES and loaded is not None:
            if loaded.__dict__.get(name) is obj:
                paths.add(f"{module_name}.{name}")
    return paths


def covered(paths: Set[str], name: str, found: Dict[str, Optional[Set[str]]]) -> bool:
    for path in paths:
        if path in found:
            return True
        module, _, attr = path.rpartition(".")
        if module in found and (found[module] is None or attr in found[module] or name in found[module]):
            return True
    return False


def test_every_public_name_is_in_the_reference():
    found = directives()
    missing = []
    for module, name, obj in public_names():
        if not covered(homes(obj, name), name, found):
            missing.append(f"{module}.{name}")
    assert not missing, (
        "public names missing from docs/reference/*.md (add a '::: path.to.Object' directive, or "
        f"'::: the.module' without a members limit): {missing}"
    )


def test_reference_directives_name_modules_or_objects_of_ours():
    # A typo here fails the site build; this says so without building it.
    for target in directives():
        assert target.split(".")[0] in OUR_PACKAGES, target
        module, attr = target, None
        while True:
            try:
                obj = importlib.import_module(module)
                break
            except ImportError:
                module, _, last = module.rpartition(".")
                attr = last if attr is None else f"{last}.{attr}"
                assert module, f"::: {target} names nothing importable"
        for part in (attr or "").split(".") if attr else ():
            obj = getattr(obj, part, None)
            assert obj is not None, f"::: {target}: {part!r} does not exist"


# ------------------------------------------------------------------ docstrings


def _ours(obj: object) -> bool:
    return str(getattr(obj, "__module__", "") or "").split(".")[0] in OUR_PACKAGES


def _own_doc(value: object) -> str:
    """The docstring written on this function/property itself, never an inherited one."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return ((getattr(value, "__doc__", None) or "") if value is not None else "").strip()


def _is_routine(value: object) -> bool:
    return isinstance(value, (classmethod, staticmethod, property)) or inspect.isfunction(value)


def _contract_doc(cls: type, name: str) -> str:
    """The docstring of ``name`` on the nearest base class of ours that documents it: an
    override implementing a documented contract need not restate it (the site shows the
    base's text, through griffe-inherited-docstrings)."""
    for base in cls.__mro__[1:]:
        if _ours(base) and name in base.__dict__:
            doc = _own_doc(base.__dict__[name])
            if doc:
                return doc
    return ""


def undocumented() -> List[str]:
    """Public classes, functions and methods of ours without a docstring."""
    missing: List[str] = []
    seen: Set[int] = set()
    classes: List[type] = []
    for _, _, obj in public_names():
        if id(obj) in seen or not _ours(obj):
            continue
        seen.add(id(obj))
        if inspect.isclass(obj):
            for cls in obj.__mro__:  # the bases of ours behind a public class are public API too
                if _ours(cls) and cls not in classes:
                    classes.append(cls)
        elif inspect.isfunction(obj) and not (obj.__doc__ or "").strip():
            missing.append(f"{obj.__module__}.{obj.__qualname__}")
    for cls in classes:
        where = f"{cls.__module__}.{cls.__qualname__}"
        doc = (cls.__dict__.get("__doc__") or "").strip()
        if not doc or doc.startswith(f"{cls.__name__}("):  # empty, or what @dataclass writes itself
            missing.append(where)
        for name, value in cls.__dict__.items():
            if name.startswith("_") or not _is_routine(value):
                continue
            if not _own_doc(value) and not _contract_doc(cls, name):
                missing.append(f"{where}.{name}")
    return missing


def test_every_public_class_function_and_method_has_a_docstring():
    missing = undocumented()
    by_module: Dict[str, List[str]] = {}
    for path in missing:
        module = next(m for m in _module_prefixes(path))
        by_module.setdefault(module, []).append(path[len(module) + 1:])
    report = "\n".join(f"  {module}: {', '.join(names)}" for module, names in sorted(by_module.items()))
    assert not missing, (
        f"{len(missing)} public names have no docstring; say why and when to use each, not just "
        f"what its name says:\n{report}"
    )


def _module_prefixes(path: str) -> Iterator[str]:
    """The longest importable module prefix of a dotted path."""
    import sys

    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in sys.modules:
            yield candidate
