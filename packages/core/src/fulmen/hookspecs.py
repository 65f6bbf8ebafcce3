"""Every hook fulmen calls, in one place.

Plugins, callbacks and the user's ``Module`` implement these as plain methods. An
implementation may take any subset of the documented arguments, by name: a callback that
only needs the step writes ``def on_train_batch_end(self, trainer): ...``. Adding an
argument to a hook later therefore breaks no existing implementation.

Where each lifecycle hook fires, drawn as the fit loop::

    register_*(register)                 # once per Trainer/Fabric, builds its registry
    setup(stage="fit")
    on_fit_start
    [sanity check]  on_sanity_check_start → validation loop → on_sanity_check_end
    on_train_start
    while not done:
        on_train_epoch_start
        for batch in train_dataloader:
            on_train_batch_start
            loss = training_step(batch)
            on_before_backward → backward → on_after_backward
            if stepping (end of an accumulation window):
                unscale gradients (16-mixed) → on_before_optimizer_step → clip → optimizer.step
                on_before_zero_grad → zero_grad
            on_train_batch_end
            if validation is due:
                on_validation_start
                on_validation_epoch_start
                for batch in val_dataloader:
                    on_validation_batch_start → validation_step → on_validation_batch_end
                on_validation_epoch_end
                on_validation_end
        on_train_epoch_end
    on_train_end
    on_fit_end
    teardown(stage="fit")

``on_save_checkpoint``/``on_load_checkpoint`` fire whenever a checkpoint is written or
restored; ``on_exception`` fires when anything above raises.

Ordering: for one hook, callbacks run first, in the order the user listed them, then the
``DataModule``, then the ``Module``, and plugin modules (entry points and objects given in
``plugins=``) run last. The module comes after the callbacks because it usually reads what
they prepared (for example metrics) and Lightning users rely on that order; plugin modules
are registered when the Trainer is built, before the objects of one run, and pluggy calls
the most recently registered implementation first. A plugin that must run earlier marks
its implementation ``@hookimpl(tryfirst=True)``.

Return values: lifecycle hooks return nothing; registration hooks return nothing and call
``register`` instead, so that each name can be attributed to the plugin that gave it.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "fulmen"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- registration
# Each receives ``register(name, factory, description="")``. ``factory(**options)`` must
# return the object; it is called only when a user asks for ``name``, so heavy imports
# belong inside it. A name another plugin already took is refused with a warning.


@hookspec
def register_accelerators(register):
    """Add accelerators (``Accelerator`` subclasses); ``Trainer(accelerator=name)``."""


@hookspec
def register_strategies(register):
    """Add strategies (``Strategy`` subclasses); ``Trainer(strategy=name)``."""


@hookspec
def register_precisions(register):
    """Add precision modes (``Precision`` subclasses); ``Trainer(precision=name)``."""


@hookspec
def register_loggers(register):
    """Add experiment loggers (``Logger`` subclasses); ``Trainer(logger=name)``."""


@hookspec
def register_callbacks(register):
    """Add callbacks that users can ask for by name; ``Trainer(callbacks=[name])``."""


@hookspec
def register_environments(register):
    """Add cluster environments (``ClusterEnvironment`` subclasses), detected in order of
    their ``detection_priority`` or chosen with ``Trainer(plugins=[name])``."""


@hookspec
def register_checkpoint_io(register):
    """Add checkpoint IO (``CheckpointIO`` subclasses); ``Trainer(plugins=[name])``."""


@hookspec
def register_profilers(register):
    """Add profilers (``fulmen.profilers.Profiler`` subclasses); ``Trainer(profiler=name)``.
    The Trainer calls ``factory()`` with no arguments; users who need settings pass an
    instance instead."""


# --------------------------------------------------------------------------- command line


@hookspec
def register_cli_commands(register):
    """Add subcommands to the ``fulmen`` command line. Called when ``fulmen`` starts, with
    ``register(name, configure, help="")``: ``configure(parser)`` receives the subcommand's
    ``argparse`` parser, adds its arguments (or nested subcommands) and sets the function that
    runs it with ``parser.set_defaults(func=run)``; ``run(args)`` returns the exit status.
    Keep ``configure`` import-light: import what the command needs inside ``run``. A name
    that is already taken (``plugins``, or another plugin's) is refused with a warning."""


# --------------------------------------------------------------------------- checkpoint formats


@hookspec(firstresult=True)
def read_checkpoint_directory(path):
    """Read a checkpoint *directory* written by a plugin's strategy (one that keeps its own
    on-disk format, such as DeepSpeed's ZeRO shards) as one fulmen checkpoint dict with a full,
    unsharded ``state_dict``. Return None when ``path`` is not in your format, so the next
    plugin is asked. ``Module.load_from_checkpoint(DIR)`` calls it, so users load such a
    directory without knowing which plugin wrote it. Implementations must refuse damaged or
    code-carrying files with ``FulmenCheckpointError`` naming the file, never unpickle them."""


# --------------------------------------------------------------------------- setup/teardown


@hookspec
def setup(trainer, module, stage):
    """Before fit/validate/test/predict starts; ``stage`` is one of those four words."""


@hookspec
def teardown(trainer, module, stage):
    """After fit/validate/test/predict ended, also after an exception."""


# --------------------------------------------------------------------------- fit


@hookspec
def on_fit_start(trainer, module):
    """Fit begins, after setup and checkpoint restore, before the sanity check."""


@hookspec
def on_fit_end(trainer, module):
    """Fit ended normally."""


@hookspec
def on_sanity_check_start(trainer, module):
    """Before the few validation batches run ahead of training."""


@hookspec
def on_sanity_check_end(trainer, module):
    """After the sanity check; its metrics are discarded right after this hook."""


@hookspec
def on_train_start(trainer, module):
    """Training begins (after the sanity check)."""


@hookspec
def on_train_end(trainer, module):
    """Training loop finished."""


@hookspec
def on_train_epoch_start(trainer, module):
    """A training epoch begins; ``trainer.current_epoch`` is its index."""


@hookspec
def on_train_epoch_end(trainer, module):
    """A training epoch ended; epoch-level training metrics are in ``callback_metrics``."""


@hookspec
def on_train_batch_start(trainer, module, batch, batch_idx):
    """Before ``training_step``; ``batch`` is already on the device."""


@hookspec
def on_train_batch_end(trainer, module, outputs, batch, batch_idx):
    """After ``training_step`` and, on stepping batches, after the optimizer step.
    ``outputs`` is what ``training_step`` returned (loss detached)."""


# --------------------------------------------------------------------------- evaluation


@hookspec
def on_validation_start(trainer, module):
    """A validation run begins (sanity check or regular)."""


@hookspec
def on_validation_end(trainer, module):
    """A validation run ended; validation metrics are in ``callback_metrics``.
    ModelCheckpoint and EarlyStopping act here."""


@hookspec
def on_validation_epoch_start(trainer, module):
    """Before the first validation batch."""


@hookspec
def on_validation_epoch_end(trainer, module):
    """After the last validation batch, before metrics are aggregated into
    ``callback_metrics``; the module may still ``self.log`` here."""


@hookspec
def on_validation_batch_start(trainer, module, batch, batch_idx, dataloader_idx):
    """Before ``validation_step``."""


@hookspec
def on_validation_batch_end(trainer, module, outputs, batch, batch_idx, dataloader_idx):
    """After ``validation_step``; ``outputs`` is its return value."""


@hookspec
def on_test_start(trainer, module):
    """A test run begins."""


@hookspec
def on_test_end(trainer, module):
    """A test run ended; test metrics are in ``callback_metrics``."""


@hookspec
def on_test_epoch_start(trainer, module):
    """Before the first test batch."""


@hookspec
def on_test_epoch_end(trainer, module):
    """After the last test batch; the module may still ``self.log`` here."""


@hookspec
def on_test_batch_start(trainer, module, batch, batch_idx, dataloader_idx):
    """Before ``test_step``."""


@hookspec
def on_test_batch_end(trainer, module, outputs, batch, batch_idx, dataloader_idx):
    """After ``test_step``; ``outputs`` is its return value."""


@hookspec
def on_predict_start(trainer, module):
    """A predict run begins."""


@hookspec
def on_predict_end(trainer, module):
    """A predict run ended."""


@hookspec
def on_predict_epoch_start(trainer, module):
    """Before the first predict batch."""


@hookspec
def on_predict_epoch_end(trainer, module):
    """After the last predict batch."""


@hookspec
def on_predict_batch_start(trainer, module, batch, batch_idx, dataloader_idx):
    """Before ``predict_step``."""


@hookspec
def on_predict_batch_end(trainer, module, outputs, batch, batch_idx, dataloader_idx):
    """After ``predict_step``; ``outputs`` is the prediction."""


# --------------------------------------------------------------------------- optimization


@hookspec
def on_before_backward(trainer, module, loss):
    """Before ``backward``; ``loss`` is already divided for gradient accumulation."""


@hookspec
def on_after_backward(trainer, module):
    """After ``backward``, before any gradient clipping or unscaling."""


@hookspec
def on_before_optimizer_step(trainer, module, optimizer):
    """Gradients are final and at their true scale (under ``16-mixed`` the loss scale was
    divided out just before this hook), clipping has not run yet: the place to log
    gradient norms."""


@hookspec
def on_before_zero_grad(trainer, module, optimizer):
    """After the optimizer stepped, before gradients are cleared."""


# --------------------------------------------------------------------------- checkpoint


@hookspec
def on_save_checkpoint(trainer, module, checkpoint):
    """A checkpoint dict is about to be written; add plain data to it in place."""


@hookspec
def on_load_checkpoint(trainer, module, checkpoint):
    """A checkpoint dict was read and is about to be restored; read your entries."""


# --------------------------------------------------------------------------- exceptions


@hookspec
def on_exception(trainer, module, exception):
    """Something raised inside fit/validate/test/predict; the exception is re-raised
    after every implementation ran."""


LIFECYCLE_HOOKS = tuple(
    name
    for name in list(globals())
    if name.startswith("on_") or name in ("setup", "teardown")
)
# Registration hooks that fill the registry (one kind each); CLI commands are not registry entries.
REGISTRATION_HOOKS = tuple(
    name for name in list(globals()) if name.startswith("register_") and name != "register_cli_commands"
)
