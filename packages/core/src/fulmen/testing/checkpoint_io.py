"""Checkpoint IO conformance.

* round trip: a checkpoint with tensors of several dtypes (float32/16, bfloat16, int64,
  bool, empty, a non-contiguous view), nested dicts/lists, ints, floats, strings and None
  loads back exactly (values, dtypes, shapes);
* snapshot: changing the tensors after ``save_checkpoint`` returned does not change what
  was saved (background writers must copy first);
* overwrite: saving to an existing path replaces it completely;
* atomicity: a save that fails half-way (an object that cannot be serialised, after a large
  tensor) raises, from ``save_checkpoint`` or at the latest from ``teardown()``, leaves the
  previous file at that path intact and loadable, and leaves no partial file behind;
* ``remove_checkpoint`` deletes, and is quiet about a path that is already gone; loading a
  missing path raises (``FileNotFoundError``/``OSError`` or ``FulmenCheckpointError``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from fulmen.testing._common import factory_of, fail, first_difference


class _Unserialisable:
    """Makes ``torch.save`` fail part-way through writing."""

    def __reduce__(self):
        raise RuntimeError("fulmen conformance: this object refuses to be serialised")


def make_io(spec: Any) -> Any:
    """A fresh checkpoint IO from a registered name, ``"module:attr"``, a class or a factory."""
    from fulmen.io.checkpoint_io import CheckpointIO

    return factory_of("checkpoint_io", spec, CheckpointIO)()


def sample_checkpoint() -> Dict[str, Any]:
    """A checkpoint with tensors of several dtypes (a view and an empty one among them) and plain values."""
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(6, 4, generator=generator)
    return {
        "state_dict": {
            "weight": base,
            "half": base.half(),
            "bf16": base.bfloat16(),
            "steps": torch.arange(5, dtype=torch.int64),
            "mask": torch.tensor([True, False, True]),
            "empty": torch.empty(0, 3),
            "column": base[:, 1],  # a non-contiguous view
        },
        "optimizer_states": [{"state": {0: {"momentum_buffer": base * 2}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "epoch": 3,
        "global_step": 120,
        "loss": 0.125,
        "name": "conformance",
        "nothing": None,
        "sizes": [1, 2, 3],
    }


def _finish(io: Any) -> None:
    wait = getattr(io, "wait", None)
    if callable(wait):
        wait()


def _load(spec: Any, path: Path) -> Any:
    reader = make_io(spec)
    try:
        return reader.load_checkpoint(path)
    finally:
        reader.teardown()


def check_round_trip(spec: Any, directory: os.PathLike) -> None:
    """The round-trip and snapshot rule: what was passed to ``save_checkpoint`` loads back exactly."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / "roundtrip.ckpt"
    io = make_io(spec)
    checkpoint = sample_checkpoint()
    expected = {**checkpoint, "state_dict": {k: v.clone() for k, v in checkpoint["state_dict"].items()}}
    io.save_checkpoint(checkpoint, path)
    # Snapshot semantics: what was passed is what is stored, whatever happens to it next.
    checkpoint["state_dict"]["weight"].add_(1.0)
    checkpoint["epoch"] = -1
    _finish(io)
    loaded = io.load_checkpoint(path)
    io.teardown()
    diff = first_difference(expected, loaded)
    if diff:
        rule = "a saved checkpoint loads back exactly (values, dtypes, shapes, plain data)"
        if "weight" in diff or "epoch" in diff:
            rule += "; it must store the values as they were when save_checkpoint was called"
        raise fail("checkpoint_io", spec, rule, diff)


def check_overwrite_and_remove(spec: Any, directory: os.PathLike) -> None:
    """The overwrite and remove rule, and that loading a missing path raises."""
    from fulmen.errors import FulmenCheckpointError

    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / "overwrite.ckpt"
    io = make_io(spec)
    io.save_checkpoint({"version": 1, "t": torch.zeros(1000)}, path)
    io.save_checkpoint({"version": 2}, path)
    _finish(io)
    loaded = io.load_checkpoint(path)
    if loaded != {"version": 2}:
        raise fail("checkpoint_io", spec, "saving to an existing path replaces the old checkpoint completely",
                   f"loaded {sorted(loaded)} with version {loaded.get('version')!r}")
    io.remove_checkpoint(path)
    _finish(io)
    if path.exists():
        raise fail("checkpoint_io", spec, "remove_checkpoint deletes the checkpoint", f"{path} still exists")
    try:
        io.remove_checkpoint(path)
        _finish(io)
    except Exception as exc:
        raise fail("checkpoint_io", spec, "remove_checkpoint of a path that is gone does nothing",
                   f"raised {type(exc).__name__}: {exc}") from None
    try:
        io.load_checkpoint(path)
    except (OSError, FulmenCheckpointError):
        pass
    except Exception as exc:
        raise fail("checkpoint_io", spec, "loading a missing path raises FileNotFoundError/OSError or FulmenCheckpointError",
                   f"raised {type(exc).__name__}: {exc}") from None
    else:
        raise fail("checkpoint_io", spec, "loading a missing path raises", "it returned normally")
    finally:
        io.teardown()


def check_atomic(spec: Any, directory: os.PathLike) -> None:
    """The atomicity rule: a failed write raises, keeps the previous file and leaves no partial file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "atomic.ckpt"
    io = make_io(spec)
    good = {"version": "good", "t": torch.arange(10.0)}
    io.save_checkpoint(good, path)
    _finish(io)
    before = sorted(os.listdir(directory))
    bad = {"big": torch.randn(256, 1024), "broken": _Unserialisable()}  # ~1 MB is written before it fails
    raised = None
    try:
        io.save_checkpoint(bad, path)
        _finish(io)
    except Exception as exc:
        raised = exc
    try:
        io.teardown()
    except Exception as exc:
        raised = raised or exc
    if raised is None:
        raise fail("checkpoint_io", spec, "a failed write raises (from save_checkpoint, or at the latest teardown)",
                   "saving an object that cannot be serialised reported success")
    try:
        diff = first_difference(good, _load(spec, path))
    except Exception as exc:
        diff = f"loading it raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if diff:
        raise fail("checkpoint_io", spec, "a failed write leaves the previous checkpoint at that path intact",
                   f"after the failed save: {diff}")
    after = sorted(os.listdir(directory))
    if after != before:
        raise fail("checkpoint_io", spec, "a failed write leaves no partial or temporary file behind",
                   f"directory held {before}, now holds {after}")


def check_checkpoint_io(spec: Any, directory: os.PathLike) -> None:
    """Every checkpoint IO rule, each in its own subdirectory of ``directory``."""
    directory = Path(directory)
    check_round_trip(spec, directory / "roundtrip")
    check_overwrite_and_remove(spec, directory / "overwrite")
    check_atomic(spec, directory / "atomic")
