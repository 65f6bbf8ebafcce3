"""Building the jsonargparse parser of one subcommand, and the schema the strict checks use.

Only the parser of the subcommand that runs is built (``fulmen fit --help`` builds one),
and building it imports the Trainer, the model's module and jsonargparse, but no plugin:
plugins load when a registered name has to be checked, after parsing.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Optional, Union

from fulmen.cli.registry_types import trainer_types
from fulmen.cli.signatures import EMPTY, Param, init_parameters
from fulmen.cli.strict import ClassNode, Leaf, Schema, SlotNode

# Arguments of the Trainer's stage methods that a config can set, per subcommand (the model
# and datamodule come from ``model``/``data``, the dataloaders from the datamodule).
STAGE_ARGUMENTS = {
    "fit": {"ckpt_path": Optional[str]},
    "validate": {"ckpt_path": Optional[str], "verbose": bool},
    "test": {"ckpt_path": Optional[str], "verbose": bool},
    "predict": {"ckpt_path": Optional[str]},
}
STAGE_DEFAULTS = {"ckpt_path": None, "verbose": True}
SKIPPED_TRAINER_ARGUMENTS = ("allow_plugins", "deny_plugins")  # process settings, not run settings


def docstring_arguments(cls: type) -> Dict[str, str]:
    """``Args:`` lines of a Google-style docstring (``name: text`` and ``a, b: text``),
    read with a regex: cheaper than a docstring parser, which ``--help`` would pay for."""
    doc = cls.__doc__ or ""
    out: Dict[str, str] = {}
    for match in re.finditer(r"^\s{4,8}([\w, ]+):\s+(.+)$", doc.split("Args:", 1)[-1], re.MULTILINE):
        for name in match.group(1).split(","):
            out[name.strip()] = match.group(2).strip().replace("``", "")
    return out


def trainer_parameters(trainer_class: type) -> Dict[str, Param]:
    overrides = trainer_types()
    params = {}
    for name, param in init_parameters(trainer_class).items():
        if name in SKIPPED_TRAINER_ARGUMENTS:
            continue
        annotation = overrides.get(name, param.annotation)
        params[name] = Param(name, annotation, param.default, param.owner)
    return params


def add_trainer_arguments(parser, trainer_class: type, defaults: Dict[str, Any]) -> Dict[str, Param]:
    """``--trainer.<argument>`` for each Trainer argument, typed for configs (see
    ``registry_types``); the Trainer itself is built by the CLI, not by jsonargparse."""
    params = trainer_parameters(trainer_class)
    helps = docstring_arguments(trainer_class)
    group = parser.add_argument_group(f"Trainer arguments ({trainer_class.__module__}.{trainer_class.__name__})")
    for name, param in params.items():
        default = defaults.get(name, None if param.default is EMPTY else param.default)
        group.add_argument(f"--trainer.{name}", type=param.annotation, default=default, help=helps.get(name, ""))
    return params


def add_class(parser, key: str, cls: Optional[type], base: type, subclass_mode: bool, required: bool) -> Any:
    """``--model`` / ``--data``: the given class's arguments, or any subclass of ``base``
    chosen by ``class_path`` (the default when no class is given, as in LightningCLI)."""
    if cls is not None and not subclass_mode:
        parser.add_class_arguments(cls, key, fail_untyped=False, sub_configs=True)
        return ClassNode(cls, init_parameters(cls))
    parser.add_subclass_arguments(cls or base, key, required=required, fail_untyped=False)
    return SlotNode(cls or base)


def build(stage: Optional[str], model_class, datamodule_class, subclass_mode_model: bool,
          subclass_mode_data: bool, trainer_class, trainer_defaults: Dict[str, Any],
          seed_everything_default: Union[bool, int], parser_kwargs: Dict[str, Any]):
    """The parser and the strict checks' schema of one subcommand (``stage=None``: the
    ``run=False`` form, which has no subcommand)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from fulmen.datamodule import DataModule
    from fulmen.module import Module

    # The CLI reports errors itself (fulmen.cli.strict), so the parser must raise, not exit.
    kwargs = {"parser_mode": "yaml", **{k: v for k, v in parser_kwargs.items() if k != "exit_on_error"}}
    if stage is not None:
        kwargs["prog"] = f"{kwargs.get('prog') or os.path.basename(sys.argv[0] or 'cli')} {stage}"
    parser = ArgumentParser(exit_on_error=False, **kwargs)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML config file (repeatable; later files win, options on the command line win over files)")
    # jsonargparse adds --print_config beside --config; the CLI handles it itself
    # (fulmen.cli.arguments) so the printed config went through the strict checks too.
    schema = Schema()
    parser.add_argument("--seed_everything", type=Union[bool, int], default=seed_everything_default,
                        help="an int seeds every generator with it; true picks a random seed (recorded in "
                             "the saved config); false seeds nothing")
    schema.nodes["seed_everything"] = Leaf(Union[bool, int])
    params = add_trainer_arguments(parser, trainer_class, trainer_defaults)
    schema.nodes["trainer"] = ClassNode(trainer_class, params)
    schema.nodes["model"] = add_class(parser, "model", model_class, Module, subclass_mode_model, required=True)
    schema.nodes["data"] = add_class(parser, "data", datamodule_class, DataModule, subclass_mode_data,
                                     required=False)
    for name, annotation in STAGE_ARGUMENTS.get(stage, {}).items():
        parser.add_argument(f"--{name}", type=annotation, default=STAGE_DEFAULTS[name])
        schema.nodes[name] = Leaf(annotation)
    return parser, schema
