"""The name table of ``fulmen migrate``: each public Lightning 2.x name a program imports, and
what to write instead.

Keys are Lightning's dotted names in their canonical spelling (``lightning.pytorch.*`` and
``lightning.fabric.*``; ``pytorch_lightning`` and ``lightning_fabric`` are the same packages
under their standalone names, see :func:`canonical`). A value is either a :class:`Target`
(the fulmen module and name, reachable with a plain import) or a :class:`NoEquivalent` (why
not, and what to do instead). ``tests/core/migrate/test_names.py`` imports every target, so
the table cannot point at something fulmen does not have, and
``docs/migrating-from-lightning.md`` lists every entry.

Lightning defines most classes in private submodules and re-exports them from a public
package (``lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint`` is
``lightning.pytorch.callbacks.ModelCheckpoint``). Only the public names are listed;
:func:`lookup` finds a submodule's name under the packages above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple, Union

ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric")
_STANDALONE = {"pytorch_lightning": "lightning.pytorch", "lightning_fabric": "lightning.fabric"}
# Lookups that fall back from a submodule to the package above it stop here: a name under
# ``lightning.pytorch`` is never taken for a top-level ``lightning`` name.
_FAMILIES = ("lightning.pytorch", "lightning.fabric", "lightning")


@dataclass(frozen=True)
class Target:
    """Where fulmen has the name. ``pending`` marks names colleagues are adding now: the
    rewriter maps them only once they import, and reports them with ``advice`` until then."""

    module: str
    name: str
    pending: bool = False
    advice: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class NoEquivalent:
    """A Lightning name fulmen does not provide; ``advice`` is what the report tells the user."""

    advice: str


Entry = Union[Target, NoEquivalent]


def canonical(name: str) -> str:
    """``pytorch_lightning.X`` -> ``lightning.pytorch.X`` and ``lightning_fabric.X`` ->
    ``lightning.fabric.X``: one spelling for the table, whichever package the program used."""
    root, dot, rest = name.partition(".")
    if root in _STANDALONE:
        return _STANDALONE[root] + dot + rest
    return name


def is_lightning(name: str) -> bool:
    return name.partition(".")[0] in ROOTS


NAMES: Dict[str, Entry] = {}
MODULES: Dict[str, Union[str, NoEquivalent]] = {}


def _same(lightning_module: str, fulmen_module: str, names: Iterable[str], pending: bool = False,
          advice: str = "") -> None:
    for name in names:
        NAMES[f"{lightning_module}.{name}"] = Target(fulmen_module, name, pending, advice)


def _renamed(lightning_module: str, pairs: Dict[str, Tuple[str, str]], pending: bool = False,
             advice: str = "") -> None:
    for name, (module, new_name) in pairs.items():
        NAMES[f"{lightning_module}.{name}"] = Target(module, new_name, pending, advice)


def _none(lightning_module: str, names: Iterable[str], advice: str) -> None:
    for name in names:
        NAMES[f"{lightning_module}.{name}"] = NoEquivalent(advice)


def _both(suffix: str) -> Tuple[str, str]:
    return f"lightning.pytorch{suffix}", f"lightning.fabric{suffix}"


# -- modules: what a module alias (``import lightning.pytorch as pl``) is rebound to --------
MODULES.update({
    "lightning": "fulmen",
    "lightning.pytorch": "fulmen",
    "lightning.fabric": "fulmen",
    "lightning.pytorch.core": "fulmen",
    "lightning.pytorch.callbacks": "fulmen.callbacks",
    "lightning.pytorch.loggers": "fulmen.loggers",
    "lightning.fabric.loggers": "fulmen.loggers",
    "lightning.pytorch.strategies": "fulmen.strategies",
    "lightning.fabric.strategies": "fulmen.strategies",
    "lightning.pytorch.accelerators": "fulmen.accelerators",
    "lightning.fabric.accelerators": "fulmen.accelerators",
    "lightning.pytorch.plugins": "fulmen",
    "lightning.fabric.plugins": "fulmen",
    "lightning.pytorch.plugins.precision": "fulmen.precision",
    "lightning.fabric.plugins.precision": "fulmen.precision",
    "lightning.pytorch.plugins.environments": "fulmen.environments",
    "lightning.fabric.plugins.environments": "fulmen.environments",
    "lightning.pytorch.plugins.io": "fulmen.io",
    "lightning.fabric.plugins.io": "fulmen.io",
    "lightning.pytorch.profilers": "fulmen.profilers",
    "lightning.pytorch.utilities": "fulmen.utilities",
    "lightning.fabric.utilities": "fulmen.utilities",
    "lightning.pytorch.utilities.rank_zero": "fulmen.utilities",
    "lightning.fabric.utilities.rank_zero": "fulmen.utilities",
})
_TUNER = ("fulmen has no tuner (batch-size and learning-rate finders): set batch_size and the "
          "learning rate yourself, or keep Lightning installed for this line")
_APP = ("lightning.app (Lightning AI's app framework) is not part of training and has no fulmen "
        "equivalent: keep Lightning installed for it, or move this code out of the training program")
MODULES.update({
    "lightning.app": NoEquivalent(_APP),
    "lightning.data": NoEquivalent("lightning.data is the separate litdata project: install litdata "
                                   "and import from litdata instead"),
    "lightning.pytorch.tuner": NoEquivalent(_TUNER),
    "lightning.pytorch.demos": NoEquivalent(
        "Lightning's demo models and datasets have no fulmen equivalent: copy the small class you "
        "use into your program (fulmen.testing.reference_module() is a ready fulmen.Module for tests)"),
    "lightning.pytorch.serve": NoEquivalent("fulmen has no model-serving helpers: export the model "
                                            "with torch.export or TorchScript yourself"),
})

# -- the top-level packages -------------------------------------------------------------
for _package in ("lightning", "lightning.pytorch"):
    _renamed(_package, {
        "Trainer": ("fulmen", "Trainer"),
        "LightningModule": ("fulmen", "Module"),
        "LightningDataModule": ("fulmen", "DataModule"),
        "Callback": ("fulmen", "Callback"),
        "seed_everything": ("fulmen", "seed_everything"),
        "__version__": ("fulmen", "__version__"),
    })
_renamed("lightning", {"Fabric": ("fulmen", "Fabric")})
_renamed("lightning.fabric", {
    "Fabric": ("fulmen", "Fabric"),
    "seed_everything": ("fulmen", "seed_everything"),
    "__version__": ("fulmen", "__version__"),
})
_none("lightning", ["LightningApp", "LightningFlow", "LightningWork", "CloudCompute", "BuildConfig"], _APP)
_none("lightning.fabric", ["is_wrapped"],
      "fulmen has no is_wrapped(): test isinstance(obj, fulmen.fabric.wrappers.FabricModule) "
      "(FabricOptimizer, DeviceDataLoader for optimizers and loaders)")
_renamed("lightning.pytorch.core", {
    "LightningModule": ("fulmen", "Module"),
    "LightningDataModule": ("fulmen", "DataModule"),
})
_none("lightning.pytorch.core", ["LightningOptimizer"],
      "fulmen hands configure_optimizers' optimizers to training code unwrapped: use the "
      "torch.optim.Optimizer itself (self.optimizers() returns it)")

# -- callbacks --------------------------------------------------------------------------
_CALLBACKS = "lightning.pytorch.callbacks"
_same(_CALLBACKS, "fulmen.callbacks", [
    "Callback", "EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "ModelSummary",
    "OnExceptionCheckpoint", "Timer",
])
_same(_CALLBACKS, "fulmen.callbacks", [
    "BaseFinetuning", "BackboneFinetuning", "StochasticWeightAveraging", "GradientAccumulationScheduler",
    "EMAWeightAveraging",
])
_renamed(_CALLBACKS, {"TQDMProgressBar": ("fulmen.callbacks", "ProgressBar")})
_none(_CALLBACKS, ["RichProgressBar"], "fulmen's progress bar is tqdm-based: use fulmen.callbacks.ProgressBar")
_none(_CALLBACKS, ["RichModelSummary"], "use fulmen.callbacks.ModelSummary (plain-text table)")
_none(_CALLBACKS, ["ProgressBar"],
      "Lightning's ProgressBar is the base class of its bars; fulmen's ProgressBar is the tqdm bar "
      "itself: subclass fulmen.Callback for a custom bar, or use fulmen.callbacks.ProgressBar")
_none(_CALLBACKS, ["BatchSizeFinder", "LearningRateFinder"], _TUNER)
_none(_CALLBACKS, ["LambdaCallback"],
      "write a small fulmen.Callback subclass with the hooks the lambdas implemented")
_none(_CALLBACKS, ["BasePredictionWriter"],
      "collect the results of trainer.predict() and write them yourself, or write them in a "
      "fulmen.Callback's on_predict_batch_end")
_none(_CALLBACKS, ["DeviceStatsMonitor", "ThroughputMonitor", "SpikeDetection", "ModelPruning",
                   "WeightAveraging"],
      "fulmen has no such callback: port it as a fulmen.Callback, or drop it")

# -- loggers ----------------------------------------------------------------------------
for _loggers in _both(".loggers"):
    _same(_loggers, "fulmen.loggers", ["Logger", "CSVLogger"])
    _renamed(_loggers, {"TensorBoardLogger": ("fulmen_loggers", "TensorBoardLogger")})
_renamed("lightning.pytorch.loggers", {
    "WandbLogger": ("fulmen_loggers", "WandbLogger"),
    "MLFlowLogger": ("fulmen_loggers", "MLflowLogger"),
    "CometLogger": ("fulmen_loggers", "CometLogger"),
})
_none("lightning.pytorch.loggers", ["NeptuneLogger"],
      "its hosted service has closed: subclass fulmen.loggers.Logger, or use CSVLogger, "
      "fulmen_loggers.TensorBoardLogger, MLflowLogger, WandbLogger, ClearMLLogger or CometLogger")

# -- strategies, accelerators, precision, environments, checkpoint IO -------------------
# The only strings here that name a backend: where the official packages keep Lightning's
# backend classes, in one table as registry.OFFICIAL_PROVIDERS (tests/core/test_no_backend_names.py).
OFFICIAL_TARGETS: Dict[str, str] = {
    "deepspeed_module": "fulmen_deepspeed",
    "xla_advice": "fulmen-accelerator-xla selects XLA by name: pass accelerator='xla' and strategy='xla', "
                  "'single_xla' or 'xla_spmd' instead of the class",
}
_DEEPSPEED_MODULE, _XLA = OFFICIAL_TARGETS.values()
for _strategies in _both(".strategies"):
    _same(_strategies, "fulmen.strategies", ["Strategy", "SingleDeviceStrategy", "DDPStrategy"])
    _renamed(_strategies, {
        "FSDPStrategy": ("fulmen_fsdp", "FSDPStrategy"),
        "DeepSpeedStrategy": (_DEEPSPEED_MODULE, "DeepSpeedStrategy"),
    })
    _none(_strategies, ["XLAStrategy", "SingleDeviceXLAStrategy"], _XLA)
    _none(_strategies, ["ParallelStrategy"], "subclass fulmen.strategies.DDPStrategy (the base of "
                                              "fulmen's multi-process strategies)")
    _none(_strategies, ["ModelParallelStrategy"],
          "fulmen has no tensor-parallel strategy: use fulmen_fsdp.FSDPStrategy, or keep Lightning")
    _none(_strategies, ["StrategyRegistry"], "fulmen's registry is filled by plugins: implement the "
                                             "register_strategies hook (see docs/plugins.md)")
_none("lightning.fabric.strategies", ["XLAFSDPStrategy"], _XLA)
_none("lightning.fabric.strategies", ["DataParallelStrategy"],
      "fulmen has no DataParallel strategy: use strategy='ddp' (one process per device)")

for _accelerators in _both(".accelerators"):
    _same(_accelerators, "fulmen.accelerators", ["Accelerator", "CPUAccelerator", "CUDAAccelerator",
                                                 "MPSAccelerator"])
    _none(_accelerators, ["XLAAccelerator"], _XLA)
    _none(_accelerators, ["find_usable_cuda_devices"],
          "pass devices= as a count or list of indices (for example devices=[0, 1])")

_PRECISION_CLASS = ("fulmen's precision classes take a torch dtype, not Lightning's precision "
                    "string: pass precision='16-mixed' (or 'bf16-mixed', '16-true', ...) to the "
                    "Trainer or Fabric instead of building the plugin")
_OTHER_PRECISION = ("fulmen has no such precision plugin: pass the matching precision= string to "
                    "the Trainer or Fabric (the strategy plugin chooses its own precision)")
for _plugins in _both(".plugins") + _both(".plugins.precision"):
    _same(_plugins, "fulmen.precision", ["Precision", "DoublePrecision"])
    _none(_plugins, ["MixedPrecision", "HalfPrecision"], _PRECISION_CLASS)
    _none(_plugins, ["BitsandbytesPrecision", "TransformerEnginePrecision", "DeepSpeedPrecision",
                     "FSDPPrecision", "XLAPrecision"], _OTHER_PRECISION)
for _environments in _both(".plugins") + _both(".plugins.environments"):
    _same(_environments, "fulmen.environments", ["ClusterEnvironment", "LSFEnvironment", "MPIEnvironment",
                                                 "SLURMEnvironment", "TorchElasticEnvironment"])
    _renamed(_environments, {"LightningEnvironment": ("fulmen.environments", "LocalEnvironment")})
    _none(_environments, ["KubeflowEnvironment", "XLAEnvironment"],
          "fulmen has no such cluster environment: torchrun's variables are read by "
          "TorchElasticEnvironment; otherwise subclass fulmen.environments.ClusterEnvironment")
for _io in _both(".plugins") + _both(".plugins.io"):
    _same(_io, "fulmen.io", ["CheckpointIO", "TorchCheckpointIO"])
    _none(_io, ["XLACheckpointIO"], _XLA)
_renamed("lightning.pytorch.plugins", {"AsyncCheckpointIO": ("fulmen.io.async_checkpoint_io", "AsyncCheckpointIO")})
_renamed("lightning.pytorch.plugins.io", {"AsyncCheckpointIO": ("fulmen.io.async_checkpoint_io", "AsyncCheckpointIO")})
_none("lightning.pytorch.plugins", ["TorchSyncBatchNorm", "LayerSync"],
      "pass Trainer(sync_batchnorm=True) instead of the plugin")

# -- profilers (being added) ------------------------------------------------------------
_same("lightning.pytorch.profilers", "fulmen.profilers",
      ["Profiler", "SimpleProfiler", "AdvancedProfiler", "PyTorchProfiler", "PassThroughProfiler"])
_none("lightning.pytorch.profilers", ["XLAProfiler"], _XLA)

# -- utilities --------------------------------------------------------------------------
for _utilities in _both(".utilities"):
    _same(_utilities, "fulmen.utilities", ["rank_zero_only", "rank_zero_info", "rank_zero_warn",
                                           "rank_zero_debug", "rank_zero_deprecation"])
    _renamed(_utilities, {
        "seed_everything": ("fulmen", "seed_everything"),
        "move_data_to_device": ("fulmen.utilities.apply", "move_data_to_device"),
        "AttributeDict": ("fulmen.utilities.hparams", "AttributeDict"),
    })
    _none(_utilities, ["measure_flops"], "use torch.utils.flop_counter.FlopCounterMode directly")
    _none(_utilities, ["suggested_max_num_workers"], "choose num_workers yourself (os.cpu_count() per device)")
    _none(_utilities, ["disable_possible_user_warnings"], "filter the warnings with warnings.filterwarnings")
    _none(_utilities, ["apply_to_collection"],
          "fulmen.utilities.apply.apply_to_tensors(data, fn) applies fn to every tensor in nested "
          "containers; for other types keep lightning_utilities.apply_to_collection")
    _none(_utilities, ["isolate_rng"],
          "use torch.random.fork_rng() (and save/restore Python's random state yourself)")
_same("lightning.pytorch.utilities", "fulmen.utilities", ["is_overridden"])
# Lightning defines its banner at the top of the package (lightning/pytorch/__init__.py).
_same("lightning.pytorch", "fulmen.utilities", ["cli_lightning_logo"])
_renamed("lightning.pytorch", {"LIGHTNING_LOGO": ("fulmen.utilities.banner", "FULMEN_LOGO")})
_none("lightning.pytorch.utilities", ["grad_norm"],
      "compute the norms with torch.linalg.vector_norm over p.grad in on_before_optimizer_step")
_none("lightning.pytorch.utilities", ["CombinedLoader"],
      "fulmen has no CombinedLoader: zip the loaders in your own iterable (or itertools) and "
      "return that from the *_dataloader hook")
_none("lightning.pytorch.utilities.types", ["STEP_OUTPUT", "OptimizerLRScheduler", "TRAIN_DATALOADERS",
                                            "EVAL_DATALOADERS", "LRSchedulerConfig", "LRSchedulerTypeUnion"],
      "a typing alias only: annotate with the plain types (torch.Tensor, dict, DataLoader, ...)")
for _exceptions in _both(".utilities.exceptions") + _both(".utilities"):
    _renamed(_exceptions, {"MisconfigurationException": ("fulmen.errors", "FulmenConfigError")})

# -- the command line (issue 15) --------------------------------------------------------
_renamed("lightning.pytorch.cli", {"LightningCLI": ("fulmen.cli", "CLI")})
_same("lightning.pytorch.cli", "fulmen.cli", ["SaveConfigCallback"])
_none("lightning.pytorch.cli", ["LightningArgumentParser", "ArgsType"],
      "fulmen.cli.CLI builds a plain jsonargparse ArgumentParser (its add_arguments_to_parser "
      "gets one); annotate args as a list of strings or a dict")


def lookup(name: str) -> Optional[Union[Entry, str]]:
    """What the table says about a (canonical) dotted Lightning name: a :class:`Target` or
    :class:`NoEquivalent` for a name, the fulmen module (str) for a mapped module, or None
    when it knows nothing. A name in a submodule is looked up under each package above it,
    nearest first, within its family (see the module docstring); a name under a module with
    no equivalent inherits that module's advice."""
    if name in NAMES:
        return NAMES[name]
    if name in MODULES:
        return MODULES[name]
    family = next((f for f in _FAMILIES if name == f or name.startswith(f + ".")), None)
    if family is None:
        return None
    module, _, attr = name.rpartition(".")
    parent = module
    while parent != family and "." in parent:
        parent = parent.rpartition(".")[0]
        if f"{parent}.{attr}" in NAMES:
            return NAMES[f"{parent}.{attr}"]
    for prefix in _prefixes(name):
        entry = MODULES.get(prefix)
        if isinstance(entry, NoEquivalent):
            return entry
    return None


def is_module(name: str) -> bool:
    """Whether a dotted Lightning name is a package or module fulmen knows (mapped or not)."""
    return name in ROOTS or name in MODULES


def _prefixes(name: str):
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        yield ".".join(parts[:end])
