"""What a class's ``__init__`` accepts, read once from its signature and type hints.

The strict checks (``fulmen.cli.strict``) and the error messages need the same facts the
parser uses: the parameter names (to name the closest valid key), their annotations (to
say which type was expected) and which ones have none (refused, not silently skipped).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Optional

EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any  # EMPTY when the parameter has no type annotation
    default: Any  # EMPTY when it is required
    owner: str  # "MyModule.__init__", for the untyped-parameter message

    @property
    def typed(self) -> bool:
        return self.annotation is not EMPTY


@lru_cache(maxsize=None)
def init_parameters(cls: type) -> Dict[str, Param]:
    """``__init__``'s named parameters, following ``**kwargs`` into the base classes (the
    way ``super().__init__(**kwargs)`` forwards them), nearest class first."""
    params: Dict[str, Param] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            break
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            break
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation naming something not importable: use the raw one
            hints = {}
        forwards = False
        for index, parameter in enumerate(signature.parameters.values()):
            if index == 0 and parameter.name in ("self", "cls"):
                continue
            if parameter.kind is parameter.VAR_KEYWORD:
                forwards = True
                continue
            if parameter.kind is parameter.VAR_POSITIONAL or parameter.name in params:
                continue
            annotation = hints.get(parameter.name, parameter.annotation)
            params[parameter.name] = Param(parameter.name, annotation, parameter.default,
                                           f"{klass.__qualname__}.__init__")
        if not forwards:
            break
    return params


def import_class(path: str) -> Optional[type]:
    """``"pkg.mod.Class"`` → the class, or None when it does not import."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        return None
    try:
        value = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None
    return value if isinstance(value, type) else None


def type_name(annotation: Any) -> str:
    """A type as a user writes it: ``Optional[int]``, ``Union[str, Strategy]``, ``List[str]``."""
    if annotation is EMPTY:
        return "no type"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args) and len(rest) == 1:
            return f"Optional[{type_name(rest[0])}]"
        inner = ", ".join(type_name(a) for a in rest) + (", None" if len(rest) < len(args) else "")
        return f"Union[{inner}]"
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        base = {"list": "List", "dict": "Dict", "tuple": "Tuple"}.get(base, base)
        return f"{base}[{', '.join(type_name(a) for a in args)}]" if args else base
    return str(annotation).replace("typing.", "")
