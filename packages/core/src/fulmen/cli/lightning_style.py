"""``fulmen.cli.CLI``: Lightning's ``LightningCLI`` for fulmen.

``CLI(MyModule, MyData)`` in a script gives it ``fit``/``validate``/``test``/``predict``
subcommands with repeatable ``--config`` files, dotted overrides (``--trainer.max_epochs 5``),
``class_path``/``init_args``, ``--print_config``, ``link_arguments`` in
:meth:`CLI.add_arguments_to_parser`, ``before_<stage>``/``after_<stage>`` hooks, and the
resolved config saved by rank 0 in the run's log directory. Unlike LightningCLI it is strict
(``fulmen.cli.strict``), has one precedence (``fulmen.cli.arguments``) in which checkpoint
hyperparameters never override what the user typed, and checks registry names before the
Trainer is built (``fulmen.cli.registry_types``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Union

from fulmen.cli import arguments
from fulmen.cli import parser as parser_builder
from fulmen.cli.config_save import SaveConfigCallback
from fulmen.cli.registry_types import check_registry_names
from fulmen.cli.strict import NOTHING_RAN, ClassNode, FulmenCLIError, SlotNode, check_layer, explain_parse_error
from fulmen.errors import FulmenConfigError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_SUBCOMMAND_HELP = {
    "fit": "train the model (--ckpt_path resumes a run)",
    "validate": "run the validation loop once",
    "test": "run the test loop once",
    "predict": "run predict_step over the data",
}


class CLI:
    """Build a Trainer, a Module and a DataModule from config files and the command line, and
    (``run=True``) run the subcommand given first (``python train.py fit --config run.yaml``).

    Args:
        model_class: the Module class to configure; ``None`` (or ``subclass_mode_model=True``)
            takes any ``fulmen.Module`` subclass chosen with ``--model pkg.MyModule``.
        datamodule_class: the DataModule class; ``None`` (or ``subclass_mode_data=True``) takes
            any subclass chosen with ``--data pkg.MyData``, or none.
        save_config_callback: the callback that writes the resolved config (``None``: none).
        save_config_kwargs: its keyword arguments (``config_filename``, ``overwrite``, ...).
        trainer_class: the Trainer class (``fulmen.Trainer``).
        trainer_defaults: defaults for ``--trainer.*`` that beat the Trainer's own.
        seed_everything_default: ``True`` seeds with a random seed recorded in the config,
            an int seeds with it, ``False`` does not seed.
        parser_kwargs: keyword arguments of the jsonargparse parser; ``exit_on_error=False``
            makes mistakes raise ``FulmenCLIError`` instead of printing them and exiting with 2.
        subclass_mode_model, subclass_mode_data: accept subclasses of the given class.
        args: the arguments to parse instead of ``sys.argv[1:]`` (a list, or a dict of config).
        run: run the subcommand; ``False`` only builds ``model``, ``datamodule`` and ``trainer``
            (no subcommand is parsed).
    """

    def __init__(
        self,
        model_class: Optional[type] = None,
        datamodule_class: Optional[type] = None,
        save_config_callback: Optional[type] = SaveConfigCallback,
        save_config_kwargs: Optional[Dict[str, Any]] = None,
        trainer_class: Optional[type] = None,
        trainer_defaults: Optional[Dict[str, Any]] = None,
        seed_everything_default: Union[bool, int] = True,
        parser_kwargs: Optional[Dict[str, Any]] = None,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: Optional[Union[List[str], Dict[str, Any]]] = None,
        run: bool = True,
    ) -> None:
        if trainer_class is None:
            from fulmen.trainer.trainer import Trainer as trainer_class
        self.model_class = model_class
        self.datamodule_class = datamodule_class
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.subclass_mode_model = subclass_mode_model or model_class is None
        self.subclass_mode_data = subclass_mode_data or datamodule_class is None
        self._exit_on_error = self.parser_kwargs.get("exit_on_error", True)
        self.subcommand: Optional[str] = None
        self.model = self.datamodule = self.trainer = None
        argv = self._argv(args, run)
        try:
            self._parse(argv, run)
            if self._printing:  # --print_config printed the config: nothing more, as in Lightning
                raise SystemExit(0)
            self.before_instantiate_classes()
            self.instantiate_classes()
        except FulmenCLIError as exc:
            self._fail(exc)
        if run:
            self._run_subcommand(self.subcommand)

    # ------------------------------------------------------------------ Lightning's hooks
    def add_arguments_to_parser(self, parser) -> None:
        """Override to add arguments or ``parser.link_arguments(source, target)`` (for example
        ``"data.num_classes", "model.init_args.num_classes", apply_on="instantiate"``)."""

    def before_instantiate_classes(self) -> None:
        """Runs after parsing, before the model, datamodule and trainer are built."""

    def instantiate_trainer(self, **kwargs: Any):
        """The Trainer from its config, with the config-saving callback added."""
        callbacks = kwargs.pop("callbacks", None)
        callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if self.save_config_callback is not None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            callbacks.append(self.save_config_callback(self.parser, config, **self.save_config_kwargs))
        return self.trainer_class(callbacks=callbacks, **kwargs)

    # ------------------------------------------------------------------ parsing
    def _argv(self, args, run: bool) -> List[str]:
        if args is None:
            return sys.argv[1:]
        if isinstance(args, dict):  # a config as data: {"fit": {...}} when run=True, as in Lightning
            import yaml

            if not run:
                return ["--config", yaml.safe_dump(args)]
            if len(args) != 1 or next(iter(args)) not in SUBCOMMANDS:
                self._fail(FulmenCLIError(f"args as a dict needs one subcommand key ({', '.join(SUBCOMMANDS)}) "
                                          f"holding the config, got keys {sorted(args)}. {NOTHING_RAN}"))
            (stage, config), = args.items()
            return [stage, "--config", yaml.safe_dump(config)]
        return list(args)

    def _parse(self, argv: List[str], run: bool) -> None:
        from jsonargparse import Namespace

        if run:
            argv = self._take_subcommand(argv)
        split = arguments.split(argv)
        self.parser, self._schema = parser_builder.build(
            self.subcommand, self.model_class, self.datamodule_class, self.subclass_mode_model,
            self.subclass_mode_data, self.trainer_class, self.trainer_defaults,
            self.seed_everything_default, self.parser_kwargs,
        )
        self.add_arguments_to_parser(self.parser)
        if split.wants_help:
            self.parser.parse_args(split.options)  # prints the help and exits
        layers = self._checked_layers(split)
        first = self._checkpoint_layer(layers)
        try:
            config = self.parser.parse_args(arguments.ordered(split, first))
        except Exception as exc:  # jsonargparse's ArgumentError (and TypeError from a bad class)
            error = explain_parse_error(str(exc), self._schema)
            raise FulmenCLIError(str(error).replace(" (the command line or a config file)", self._source_of(str(error)))) from None
        for key in ("print_config", "config"):
            if key in config:
                del config[key]
        self._printing = split.print_config
        if self._printing:
            sys.stdout.write(self.parser.dump(config, skip_none=False))
            sys.stdout.flush()
            self.config = Namespace({self.subcommand: config}) if self.subcommand else config
            return
        self._seed(config)
        self.config = Namespace({self.subcommand: config}) if self.subcommand else config

    def _take_subcommand(self, argv: List[str]) -> List[str]:
        prog = self.parser_kwargs.get("prog") or os.path.basename(sys.argv[0] or "cli")
        if not argv or argv[0] in ("-h", "--help"):
            lines = [f"usage: {prog} {{{','.join(SUBCOMMANDS)}}} [--config FILE] [--print_config] [options]", "",
                     "subcommands:"] + [f"  {name:<10} {text}" for name, text in _SUBCOMMAND_HELP.items()]
            print("\n".join(lines + ["", f"`{prog} fit --help` lists each subcommand's options."]))
            raise SystemExit(0 if argv else 2)
        if argv[0] not in SUBCOMMANDS:
            import difflib

            close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            self._fail(FulmenCLIError(f"unknown subcommand {argv[0]!r}; use one of {', '.join(SUBCOMMANDS)}.{hint} {NOTHING_RAN}"))
        self.subcommand = argv[0]
        return argv[1:]

    def _checked_layers(self, split: arguments.SplitArgs) -> List[Dict[str, Any]]:
        """Every config file and the command line, each checked where the user wrote it."""
        if isinstance(self._schema.nodes.get("model"), ClassNode):
            from fulmen.cli.strict import untyped_parameters

            untyped_parameters("model", self.model_class)
        if isinstance(self._schema.nodes.get("data"), ClassNode):
            from fulmen.cli.strict import untyped_parameters

            untyped_parameters("data", self.datamodule_class)
        self._class_paths: Dict[str, str] = {}
        self._sources: List[tuple] = []
        layers = []
        for config in split.configs:
            layer, source = arguments.load_config(config)
            check_layer(layer, self._schema, source, self._class_paths)
            layers.append(layer)
            self._sources.append((layer, source))
        options = arguments.option_layer(split.options)
        check_layer(options, self._schema, "on the command line", self._class_paths)
        layers.append(options)
        self._sources.append((options, "on the command line"))
        return layers

    def _source_of(self, message: str) -> str:
        """Where the key a parse error names was last set: `` (in run.yaml)``."""
        import re

        found = re.match(r"'([^']+)'", message)
        given = re.search(r"got '(.*)' \(", message)
        parts = [p for p in (found.group(1).split(".") if found else []) if p != "init_args"]
        for layer, source in reversed(self._sources):
            node: Any = layer
            for part in parts:
                if isinstance(node, dict) and isinstance(node.get("init_args"), dict) and part in node["init_args"]:
                    node = node["init_args"][part]
                elif isinstance(node, dict) and part in node:
                    node = node[part]
                else:
                    break
            else:
                if parts and (given is None or str(node) == given.group(1)):
                    return f" ({source})"
        return ""

    def _checkpoint_layer(self, layers: List[Dict[str, Any]]) -> List[str]:
        """The checkpoint's hyperparameters as the first config: above the defaults, below
        every file and option the user gave (Lightning applies them over those, #21455)."""
        ckpt_path = arguments.find_key(layers, "ckpt_path")
        if not isinstance(ckpt_path, str) or ckpt_path in ("last", "best"):
            return []
        import yaml

        from fulmen.cli.checkpoint_hparams import checkpoint_hyperparameters

        layer: Dict[str, Any] = {}
        for key, hparams in checkpoint_hyperparameters(ckpt_path).items():
            node = self._schema.nodes.get(key)
            if not hparams or node is None:
                continue
            if isinstance(node, ClassNode):
                layer[key] = {k: v for k, v in hparams.items() if k in node.params}
            elif isinstance(node, SlotNode) and key in self._class_paths:
                from fulmen.cli.signatures import import_class, init_parameters

                params = init_parameters(import_class(self._class_paths[key]))
                layer[key] = {"class_path": self._class_paths[key],
                              "init_args": {k: v for k, v in hparams.items() if k in params}}
        return [yaml.safe_dump(layer)] if layer else []

    def _seed(self, config) -> None:
        value = config.get("seed_everything")
        if value is False or value is None:
            return
        from fulmen.utilities.seed import seed_everything

        # A random seed is recorded, so the saved config reproduces this run.
        config.seed_everything = seed_everything(None if value is True else int(value))

    # ------------------------------------------------------------------ building and running
    def instantiate_classes(self) -> None:
        """Build the datamodule, the model and the trainer from the parsed config."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer_config = config.trainer.as_dict() if hasattr(config.trainer, "as_dict") else dict(config.trainer)
        check_registry_names(trainer_config)
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes  # renamed in 4.49
        self.config_init = instantiate(config)
        self.datamodule = self.config_init.get("data")
        self.model = self.config_init.get("model")
        trainer_kwargs = dict(vars(self.config_init.trainer))
        try:
            self.trainer = self.instantiate_trainer(**trainer_kwargs)
        except FulmenConfigError as exc:
            raise FulmenCLIError(f"the trainer settings cannot work: {exc}. {NOTHING_RAN}") from None

    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        config = self.config[subcommand]
        kwargs: Dict[str, Any] = {"datamodule": self.datamodule, "ckpt_path": config.get("ckpt_path")}
        if "verbose" in config:
            kwargs["verbose"] = config.verbose
        getattr(self.trainer, subcommand)(self.model, **kwargs)
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _fail(self, exc: FulmenCLIError) -> None:
        if not self._exit_on_error:
            raise exc
        prog = self.parser_kwargs.get("prog") or os.path.basename(sys.argv[0] or "cli")
        where = f"{prog} {self.subcommand}" if self.subcommand else prog
        print(f"{where}: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
