"""The plugin API's stability net: the name and arguments of every hook as released.

A removed hook, a renamed hook or a removed/renamed argument fails here: that would break
every plugin implementing it. Such a change goes through ``fulmen/plugins/deprecations.py``
first and lands in a major release. Adding a hook or an argument is fine (implementations
take any subset of the arguments) but must be recorded: add it to ``SNAPSHOT`` with the
release that adds it, and to ``CHANGELOG.md``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fulmen import hookspecs

ROOT = Path(__file__).resolve().parents[2]

LIFECYCLE = ["trainer", "module"]
BATCH = LIFECYCLE + ["batch", "batch_idx"]
EVAL_BATCH = BATCH + ["dataloader_idx"]

# hook → (arguments, fulmen release that added it)
SNAPSHOT = {
    "register_accelerators": (["register"], "0.1.0"),
    "register_strategies": (["register"], "0.1.0"),
    "register_precisions": (["register"], "0.1.0"),
    "register_loggers": (["register"], "0.1.0"),
    "register_callbacks": (["register"], "0.1.0"),
    "register_environments": (["register"], "0.1.0"),
    "register_checkpoint_io": (["register"], "0.1.0"),
    "register_profilers": (["register"], "Unreleased"),
    "register_cli_commands": (["register"], "0.1.0"),
    "setup": (LIFECYCLE + ["stage"], "0.1.0"),
    "teardown": (LIFECYCLE + ["stage"], "0.1.0"),
    "on_fit_start": (LIFECYCLE, "0.1.0"),
    "on_fit_end": (LIFECYCLE, "0.1.0"),
    "on_sanity_check_start": (LIFECYCLE, "0.1.0"),
    "on_sanity_check_end": (LIFECYCLE, "0.1.0"),
    "on_train_start": (LIFECYCLE, "0.1.0"),
    "on_train_end": (LIFECYCLE, "0.1.0"),
    "on_train_epoch_start": (LIFECYCLE, "0.1.0"),
    "on_train_epoch_end": (LIFECYCLE, "0.1.0"),
    "on_train_batch_start": (BATCH, "0.1.0"),
    "on_train_batch_end": (LIFECYCLE + ["outputs", "batch", "batch_idx"], "0.1.0"),
    "on_validation_start": (LIFECYCLE, "0.1.0"),
    "on_validation_end": (LIFECYCLE, "0.1.0"),
    "on_validation_epoch_start": (LIFECYCLE, "0.1.0"),
    "on_validation_epoch_end": (LIFECYCLE, "0.1.0"),
    "on_validation_batch_start": (EVAL_BATCH, "0.1.0"),
    "on_validation_batch_end": (LIFECYCLE + ["outputs", "batch", "batch_idx", "dataloader_idx"], "0.1.0"),
    "on_test_start": (LIFECYCLE, "0.1.0"),
    "on_test_end": (LIFECYCLE, "0.1.0"),
    "on_test_epoch_start": (LIFECYCLE, "0.1.0"),
    "on_test_epoch_end": (LIFECYCLE, "0.1.0"),
    "on_test_batch_start": (EVAL_BATCH, "0.1.0"),
    "on_test_batch_end": (LIFECYCLE + ["outputs", "batch", "batch_idx", "dataloader_idx"], "0.1.0"),
    "on_predict_start": (LIFECYCLE, "0.1.0"),
    "on_predict_end": (LIFECYCLE, "0.1.0"),
    "on_predict_epoch_start": (LIFECYCLE, "0.1.0"),
    "on_predict_epoch_end": (LIFECYCLE, "0.1.0"),
    "on_predict_batch_start": (EVAL_BATCH, "0.1.0"),
    "on_predict_batch_end": (LIFECYCLE + ["outputs", "batch", "batch_idx", "dataloader_idx"], "0.1.0"),
    "on_before_backward": (LIFECYCLE + ["loss"], "0.1.0"),
    "on_after_backward": (LIFECYCLE, "0.1.0"),
    "on_before_optimizer_step": (LIFECYCLE + ["optimizer"], "0.1.0"),
    "on_before_zero_grad": (LIFECYCLE + ["optimizer"], "0.1.0"),
    "on_save_checkpoint": (LIFECYCLE + ["checkpoint"], "0.1.0"),
    "on_load_checkpoint": (LIFECYCLE + ["checkpoint"], "0.1.0"),
    "on_exception": (LIFECYCLE + ["exception"], "0.1.0"),
    "read_checkpoint_directory": (["path"], "Unreleased"),
}

# Hooks whose first non-None answer is the result (pluggy's firstresult): a reader asks
# the plugins in turn until one recognises the format. Fixed per hook once released.
FIRSTRESULT = {"read_checkpoint_directory"}


def current():
    """{hook: (argument names, spec options)} as ``fulmen.hookspecs`` defines them now."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: (list(inspect.signature(obj).parameters), getattr(obj, marker))
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and getattr(obj, marker, None) is not None
    }


def test_no_hook_was_removed_or_renamed():
    gone = sorted(set(SNAPSHOT) - set(current()))
    assert not gone, (
        f"hooks {gone} disappeared from fulmen.hookspecs: every plugin implementing them breaks. Deprecate them "
        "in fulmen/plugins/deprecations.py instead, and remove them only in a major release")


def test_no_argument_was_removed_or_renamed():
    now = current()
    for name, (arguments, _) in SNAPSHOT.items():
        lost = [a for a in arguments if a not in now[name][0]]
        assert not lost, (
            f"{name} lost argument(s) {lost} (now {now[name][0]}): implementations taking them fail to register. "
            "Add the new argument beside the old one and deprecate the old one instead")


def test_calling_conventions_did_not_change():
    for name, (_, options) in current().items():
        assert bool(options.get("firstresult")) == (name in FIRSTRESULT) and not options.get("historic"), (
            f"{name} changed how it is called (firstresult/historic); that changes what return values mean")


def test_every_new_hook_is_recorded_in_the_snapshot_and_the_changelog():
    now = current()
    new = sorted(set(now) - set(SNAPSHOT))
    assert not new, f"record the new hook(s) {new} in SNAPSHOT (with the release adding them) and in CHANGELOG.md"
    for name, (arguments, _) in SNAPSHOT.items():
        added = [a for a in now[name][0] if a not in arguments]
        assert not added, f"record the new argument(s) {added} of {name} in SNAPSHOT and in CHANGELOG.md"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for name in SNAPSHOT:
        assert f"`{name}`" in changelog or f"`{name}(" in changelog, f"CHANGELOG.md does not mention the hook {name}"
    for version in {release for _, release in SNAPSHOT.values()}:
        assert f"## [{version}]" in changelog, f"CHANGELOG.md has no section for {version}"
