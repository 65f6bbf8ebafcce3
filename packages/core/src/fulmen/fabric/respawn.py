"""Running a Trainer's or Fabric's work in workers that a launcher starts (spawn/fork).

Plugin managers, process groups and devices do not cross process boundaries, so each
worker builds the object anew, from the arguments its constructor was called with, and
of the caller's own class: a user's ``Trainer``/``Fabric`` subclass, with its overridden
methods and its own constructor signature, is what runs in the workers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from fulmen.errors import FulmenConfigError


class RebuildsInWorkers:
    """Mixin that remembers how the object was constructed (``__new__`` sees the outermost
    constructor's arguments, whatever a subclass's ``__init__`` takes)."""

    _constructor_args: Tuple[Tuple[Any, ...], Dict[str, Any]] = ((), {})

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj._constructor_args = (args, dict(kwargs))
        return obj


def launch_rebuilt(obj: Any, body: Callable[..., Any], *args: Any) -> Any:
    """Run ``body(rebuilt, *args)`` in every worker of ``obj.strategy.launcher``, where
    ``rebuilt`` is a new ``type(obj)``; returns rank 0's result."""
    cls = type(obj)
    if "<locals>" in cls.__qualname__:
        raise FulmenConfigError(
            f"{cls.__qualname__} is defined inside a function, so the processes that "
            f"{obj.strategy.name or 'this strategy'} starts cannot import it; define the class at "
            "module level (or use strategy='ddp', which re-runs your script)"
        )
    ctor_args, ctor_kwargs = obj._constructor_args
    return obj.strategy.launcher.launch(_rebuild_and_run, cls, ctor_args, ctor_kwargs, body, args)


def _rebuild_and_run(cls: type, ctor_args: tuple, ctor_kwargs: dict, body: Callable[..., Any], args: tuple) -> Any:
    return body(cls(*ctor_args, **ctor_kwargs), *args)
