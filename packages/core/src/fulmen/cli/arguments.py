"""The command line as layers: config files in the order given, then the dotted options.

One precedence, whatever order the user typed things in: options on the command line beat
every config file, a later file beats an earlier one, and both beat the checkpoint's
hyperparameters, which beat the defaults. jsonargparse applies ``--config`` where it
appears, so :func:`ordered` moves the files first; the checkpoint's values go in front of
them as one more config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from fulmen.cli.strict import NOTHING_RAN, FulmenCLIError

PRINT_CONFIG = "--print_config"


@dataclass
class SplitArgs:
    configs: List[str] = field(default_factory=list)  # paths or inline YAML, in order
    options: List[str] = field(default_factory=list)  # everything else, in order
    print_config: bool = False
    wants_help: bool = False


def split(argv: List[str]) -> SplitArgs:
    out = SplitArgs()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == PRINT_CONFIG or arg.startswith(PRINT_CONFIG + "="):
            out.print_config = True
        elif arg == "--config":
            if index + 1 >= len(argv):
                raise FulmenCLIError(f"--config needs a file (--config run.yaml). {NOTHING_RAN}")
            out.configs.append(argv[index + 1])
            index += 1
        elif arg.startswith("--config="):
            out.configs.append(arg.split("=", 1)[1])
        else:
            out.wants_help = out.wants_help or arg in ("-h", "--help")
            out.options.append(arg)
        index += 1
    return out


def ordered(split_args: SplitArgs, first_configs: List[str] = ()) -> List[str]:
    """The argv jsonargparse gets: the checkpoint's layer, the files, then the options."""
    argv: List[str] = []
    for config in [*first_configs, *split_args.configs]:
        argv += ["--config", config]
    return argv + split_args.options


def load_config(config: str) -> Tuple[Dict[str, Any], str]:
    """A config file (or inline YAML, as jsonargparse allows) as data, and how to name it."""
    path = Path(config)
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise FulmenCLIError(f"config file {config} is not valid YAML: {exc}. {NOTHING_RAN}") from None
        return data or {}, f"in {config}"
    try:
        data = yaml.safe_load(config)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise FulmenCLIError(f"--config {config}: no such file. {NOTHING_RAN}")
    return data, "in the inline --config"


def option_layer(options: List[str]) -> Dict[str, Any]:
    """``--trainer.max_epochs 3 --model pkg.M`` → ``{"trainer": {"max_epochs": "3"}, "model": "pkg.M"}``:
    the keys the user typed, for the strict checks (values stay strings; the parser types them)."""
    layer: Dict[str, Any] = {}
    index = 0
    while index < len(options):
        arg = options[index]
        index += 1
        if not arg.startswith("--") or arg in ("--help",):
            continue
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if index < len(options) and not options[index].startswith("--"):
                value = options[index]
                index += 1
            else:
                value = "true"
        _put(layer, key.split("."), _structured(value))
    return layer


def _structured(value: str) -> Any:
    """A mapping or list typed as JSON/YAML (``--trainer.callbacks '[{"class_path": ...}]'``)
    as data, so its keys are checked like a config file's; other values stay strings."""
    if value[:1] in ("{", "["):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _put(layer: Dict[str, Any], parts: List[str], value: Any) -> None:
    node = layer
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {"class_path": child} if isinstance(child, str) else {}
            node[part] = child
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict) and isinstance(value, str):
        node[last]["class_path"] = value  # --model pkg.M after --model.lr 0.1
    else:
        node[last] = value


def find_key(layers: List[Dict[str, Any]], key: str) -> Optional[Any]:
    """The value of a top-level key after precedence (the last layer that sets it)."""
    found = None
    for layer in layers:
        if isinstance(layer, dict) and layer.get(key) is not None:
            found = layer[key]
    return found
