"""Doing something once per job instead of once per process: ``rank_zero_only`` and the
messages built on it (Lightning's names, arguments and meanings).

Every process of a distributed job runs the same script, so a plain ``print``, warning or
file write happens ``world_size`` times. ``rank_zero_only.rank`` says which process this is.
It is read from the launcher's environment variables when this module is imported, so it is
right in processes started by torchrun, SLURM or jsrun before any strategy exists, and it is
set again from the strategy once the processes are laid out (``Fabric``/``Trainer`` set-up,
``DDPStrategy.setup_environment``), which covers processes that fulmen spawns itself and
strategies that number processes their own way.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any, Callable, Optional, TypeVar

from fulmen.errors import FulmenDeprecationWarning

T = TypeVar("T")

#: Environment variables that name this process's global rank, in the order they are
#: trusted. ``LOCAL_RANK`` comes before ``SLURM_PROCID`` as in Lightning: SLURM sets
#: ``SLURM_PROCID`` in an interactive allocation even where it did not start the processes.
RANK_ENVIRONMENT_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

log = logging.getLogger(__name__)


def rank_from_environment() -> int:
    """This process's global rank as the launcher's environment states it; 0 without one."""
    for key in RANK_ENVIRONMENT_VARIABLES:
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue  # a malformed value says nothing about the rank; try the next one
    return 0


def rank_zero_only(fn: Callable[..., T], default: Optional[T] = None) -> Callable[..., Optional[T]]:
    """Decorate ``fn`` so that it runs on global rank 0 only and returns ``default`` (``None``)
    on every other rank; the rank is read at call time from ``rank_zero_only.rank``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Optional[T]:
        if rank_zero_only.rank == 0:
            return fn(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = rank_from_environment()  # type: ignore[attr-defined]


def set_rank(rank: int) -> None:
    """Record this process's global rank (called where a strategy has laid out the processes)."""
    rank_zero_only.rank = int(rank)  # type: ignore[attr-defined]


def _with_handler() -> logging.Logger:
    """The ``fulmen`` logger, given a console handler the first time a message is logged when
    nobody configured logging: Lightning's ``rank_zero_info`` messages are meant to be seen,
    and Python's fallback handler shows warnings and errors only. An application that set up
    logging itself (any handler on the root logger) keeps full control."""
    package = logging.getLogger("fulmen")
    if not package.handlers and not logging.getLogger().handlers:
        package.addHandler(logging.StreamHandler())
        package.propagate = False
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    return log


def _user_stacklevel(stacklevel: int) -> int:
    """Lightning's ``stacklevel`` (4 = the line that called the helper) as the number
    ``warnings.warn``/``logging`` need here, where one frame fewer lies between the two
    (the helper and ``rank_zero_only``'s wrapper): a Lightning program's value keeps its meaning."""
    return max(1, stacklevel - 1)


@rank_zero_only
def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.info`` on rank 0 only, through the ``fulmen`` logger. ``stacklevel`` counts as
    in Lightning: 4 (the default) reports the line that called ``rank_zero_info``."""
    _with_handler().info(*args, stacklevel=_user_stacklevel(stacklevel), **kwargs)


@rank_zero_only
def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.debug`` on rank 0 only (shown once the ``fulmen`` logger is set to DEBUG)."""
    _with_handler().debug(*args, stacklevel=_user_stacklevel(stacklevel), **kwargs)


@rank_zero_only
def rank_zero_warn(message: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn(message, ...)`` on rank 0 only, so a job warns once, not once per
    process. ``category=`` and the other arguments go to ``warnings.warn``; ``stacklevel``
    counts as in Lightning: 4 (the default) blames the line that called ``rank_zero_warn``."""
    warnings.warn(message, stacklevel=_user_stacklevel(stacklevel), **kwargs)


@rank_zero_only
def rank_zero_deprecation(message: Any, stacklevel: int = 5, **kwargs: Any) -> None:
    """:func:`rank_zero_warn` with ``FulmenDeprecationWarning`` (a ``DeprecationWarning``) as
    the default category. ``stacklevel`` 5 (the default, as in Lightning) blames the caller
    of the function that calls ``rank_zero_deprecation``: the code using the deprecated API."""
    kwargs.setdefault("category", FulmenDeprecationWarning)
    warnings.warn(message, stacklevel=_user_stacklevel(stacklevel), **kwargs)
