"""Strict configs: an unknown key, a wrong type or an untyped parameter stops the command
before anything is built, with one paragraph naming the full key path, the expected type
and the closest valid key.

LightningCLI's users lose runs to the opposite: untyped parameters skipped without a word
(Lightning #18285), unknown keys and wrong types accepted (#12303, #20337), errors that
name the wrong parameter (#17115). Here each layer the user wrote (every config file, the
command line) is checked against the schema of what the parser accepts, so the message can
say where the key came from; type errors found by jsonargparse are rewritten in the same
form (:func:`explain_parse_error`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from fulmen.cli.signatures import EMPTY, Param, import_class, init_parameters, type_name
from fulmen.errors import FulmenConfigError

NOTHING_RAN = "Nothing was run."


class FulmenCLIError(FulmenConfigError):
    """A mistake in the command line or a config file, found before anything ran. The
    command prints its message (no traceback) and exits with status 2."""


@dataclass
class ClassNode:
    """A key whose value is the keyword arguments of one class (``trainer``, ``model`` when
    the CLI got a model class)."""

    cls: type
    params: Dict[str, Param]


@dataclass
class SlotNode:
    """A key whose value names a class: ``pkg.MyModule`` or ``{class_path, init_args}``."""

    base: type


@dataclass
class Leaf:
    annotation: Any


@dataclass
class Schema:
    nodes: Dict[str, Any] = field(default_factory=dict)
    # Keys the parser handles itself (``config``, ``help``), accepted anywhere at the top.
    builtin: Tuple[str, ...] = ("config", "help", "print_config")

    def annotation(self, path: str) -> Any:
        """The expected type at a dotted key path, or None when the schema cannot tell."""
        head, _, rest = path.partition(".")
        node = self.nodes.get(head)
        if isinstance(node, Leaf):
            return node.annotation
        if isinstance(node, ClassNode):
            param = node.params.get(rest.split(".")[0])
            return param.annotation if param is not None else None
        return None

    def all_paths(self) -> List[str]:
        paths = []
        for key, node in self.nodes.items():
            paths.append(key)
            if isinstance(node, ClassNode):
                paths += [f"{key}.{name}" for name in node.params]
        return paths


def untyped_parameters(label: str, cls: type) -> None:
    """Refuse a class with an untyped ``__init__`` parameter: its value could not be checked."""
    for param in init_parameters(cls).values():
        if not param.typed:
            example = f"{param.name}: int = {param.default!r}" if param.default is not EMPTY else f"{param.name}: int"
            raise FulmenCLIError(
                f"'{label}.{param.name}' has no type annotation ({param.owner}), so a value given "
                f"for it could not be checked; fulmen's command line refuses untyped parameters "
                f"instead of skipping them. Annotate it in {param.owner} (for example "
                f"`{example}` with the type it really takes). {NOTHING_RAN}"
            )


def _closest(key: str, candidates: Iterable[str]) -> Optional[str]:
    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(path: str, source: str, siblings: Dict[str, Any], schema: Schema) -> FulmenCLIError:
    key = path.rsplit(".", 1)[-1]
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    close = _closest(key, siblings)
    suggestion = f"{parent}.{close}" if close and parent else close
    if suggestion is None:  # maybe a key at the wrong level: max_epochs instead of trainer.max_epochs
        by_leaf = {p.rsplit(".", 1)[-1]: p for p in schema.all_paths()}
        leaf = _closest(key, by_leaf)
        suggestion = by_leaf[leaf] if leaf else None
    if suggestion is not None:
        if close and isinstance(siblings.get(close), Param):
            expected = siblings[close].annotation
        else:
            expected = schema.annotation(suggestion)
        typed = f" ({type_name(expected)})" if expected is not None else ""
        hint = f" The closest valid key is '{suggestion}'{typed}."
    else:
        hint = ""
    valid = ", ".join(sorted(siblings))
    where = f"under '{parent}'" if parent else "at the top level"
    return FulmenCLIError(
        f"unknown key '{path}' ({source}).{hint} Valid keys {where}: {valid}. {NOTHING_RAN}"
    )


def _class_from(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        return value["class_path"]
    return None


def _imported(path: str, class_path: str, source: str) -> type:
    """The class ``class_path`` names, or the error saying where it was written."""
    cls = import_class(class_path)
    if cls is None:
        raise FulmenCLIError(
            f"'{path}' ({source}): cannot import class '{class_path}'; give its full dotted path "
            f"(package.module.Class) and check that the package is installed. {NOTHING_RAN}"
        )
    return cls


def _check_slot(path: str, value: Any, node: SlotNode, source: str, schema: Schema,
                class_paths: Dict[str, str]) -> None:
    class_path = _class_from(value) or class_paths.get(path)
    if isinstance(value, dict) and "class_path" in value and not isinstance(value["class_path"], str):
        raise FulmenCLIError(f"'{path}.class_path' ({source}) must be a dotted class name. {NOTHING_RAN}")
    if class_path is None:
        return  # only init_args here; the class comes from another layer or the parser says it is missing
    cls = _imported(path, class_path, source)
    if not issubclass(cls, node.base):
        raise FulmenCLIError(
            f"'{path}' ({source}): '{class_path}' is not a subclass of "
            f"{node.base.__module__}.{node.base.__qualname__}. {NOTHING_RAN}"
        )
    class_paths[path] = class_path
    untyped_parameters(f"{path}.init_args", cls)
    if not isinstance(value, dict):
        return
    params = init_parameters(cls)
    for key, item in value.items():
        if key in ("class_path", "dict_kwargs", "help"):
            continue
        inner = item if key == "init_args" else {key: item}  # --model.lr is --model.init_args.lr
        if key == "init_args" and not isinstance(item, dict):
            raise FulmenCLIError(f"'{path}.init_args' ({source}) must be a mapping of argument names to values. {NOTHING_RAN}")
        for name in inner:
            if name not in params:
                raise _unknown(f"{path}.init_args.{name}", source, params, schema)


def _check_components(path: str, value: Any, source: str, schema: Schema) -> None:
    """A Trainer argument given as ``class_path``/``init_args`` (a strategy, each callback of
    a list): its keys are checked against that class, and a value for an untyped parameter
    is refused (the class's other untyped parameters, which the config leaves alone, are not)."""
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    for index, item in items:
        class_path = _class_from(item) if isinstance(item, dict) else None
        if class_path is None:
            continue
        where = path if index is None else f"{path}[{index}]"
        cls = _imported(where, class_path, source)
        params = init_parameters(cls)
        given = item.get("init_args") or {}
        if not isinstance(given, dict):
            raise FulmenCLIError(f"'{where}.init_args' ({source}) must be a mapping of argument names to values. {NOTHING_RAN}")
        for name in given:
            if name not in params:
                raise _unknown(f"{where}.init_args.{name}", source, params, schema)
            if not params[name].typed:
                raise FulmenCLIError(
                    f"'{where}.init_args.{name}' ({source}) has no type annotation ({params[name].owner}), so "
                    f"its value could not be checked; fulmen's command line refuses values for untyped "
                    f"parameters. Annotate it, or build this object in a script. {NOTHING_RAN}"
                )


def check_layer(layer: Dict[str, Any], schema: Schema, source: str, class_paths: Dict[str, str]) -> None:
    """Check one config file (or the command line) against ``schema``; ``class_paths``
    carries the classes chosen by earlier layers, so a later ``--model.lr`` is checked
    against the class a config file chose."""
    if not isinstance(layer, dict):
        raise FulmenCLIError(f"{source} must hold a mapping of keys to values, not {type(layer).__name__}. {NOTHING_RAN}")
    for key, value in layer.items():
        if key in schema.builtin:
            continue
        node = schema.nodes.get(key)
        if node is None:
            raise _unknown(key, source, schema.nodes, schema)
        if isinstance(node, ClassNode) and isinstance(value, dict):
            for name, item in value.items():
                if name == "help":
                    continue
                if name.rstrip("+") not in node.params:
                    raise _unknown(f"{key}.{name}", source, node.params, schema)
                _check_components(f"{key}.{name}", item, source, schema)
        elif isinstance(node, SlotNode):
            _check_slot(key, value, node, source, schema, class_paths)


# ---------------------------------------------------------------- jsonargparse's own errors
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_GIVEN = re.compile(r"(?:Given value|Got value): (.*)")
_EXPECTED = re.compile(r"Expected a (<class '([^']+)'>|[^.\n]+)")
_UNACCEPTED = re.compile(r"(?:Option|option) '([^']+)'")


def explain_parse_error(message: str, schema: Schema, source: str = "the command line or a config file") -> FulmenCLIError:
    """jsonargparse's multi-line error as one paragraph in the strict checks' form."""
    keys = _PARSER_KEY.findall(message)
    path = keys[0] if keys else ""
    if _CLASS_PATH.search(message) and len(keys) > 1:
        path = f"{keys[0]}.init_args.{keys[-1]}"
    elif _CLASS_PATH.search(message) and _UNACCEPTED.search(message):
        path = f"{keys[0]}.init_args.{_UNACCEPTED.search(message).group(1)}"
    given = _GIVEN.search(message)
    expected = schema.annotation(path) if path else None
    if expected is not None:
        expects = type_name(expected)
    else:
        found = _EXPECTED.search(message)
        expects = (found.group(2) or found.group(1)) if found else None
    if path and expects:
        got = f", got {given.group(1).strip()!r}" if given else ""
        return FulmenCLIError(f"'{path}' expects {expects}{got} ({source}). {NOTHING_RAN}")
    missing = re.search(r"arguments are required: (.+)", message)
    if missing:
        keys = [key.strip() for key in missing.group(1).split(",")]
        how = "; ".join(f"--{key} package.module.Class or `{key}: {{class_path: ...}}` in a config file"
                        if isinstance(schema.nodes.get(key), SlotNode) else f"--{key} VALUE" for key in keys)
        return FulmenCLIError(f"missing: {', '.join(repr(k) for k in keys)}. Give {how}. {NOTHING_RAN}")
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return FulmenCLIError(f"{text} ({source}). {NOTHING_RAN}")
