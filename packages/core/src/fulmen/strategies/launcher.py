"""The launcher protocol: how a strategy that needs several processes gets them.

A strategy's ``launcher`` property returns an object following :class:`Launcher`, or
``None`` once every process exists (inside a rank, or under torchrun/srun/mpirun). There
are two kinds, told apart by ``starts_in_place``:

- **in place** (``True``; fulmen's ``ddp``): this process goes on as rank 0 of the job.
  ``start_other_processes()`` is called from ``Strategy.setup_environment`` and starts the
  others, which run the same program from the top.
- **workers** (``False``; ``ddp_spawn``, ``ddp_fork``, a cluster engine's workers): this
  process only launches. ``launch(function, *args, **kwargs)`` runs ``function`` in every
  worker and returns rank 0's result. The Trainer and Fabric pass a function that builds
  ``type(self)`` anew from the arguments it was constructed with, so a user's subclass of
  ``Trainer``/``Fabric`` is what runs in the workers.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable


@runtime_checkable
class Launcher(Protocol):
    """What the Trainer and Fabric expect of ``Strategy.launcher``.

    Besides these, an in-place launcher has ``start_other_processes()`` (called by its
    strategy's ``setup_environment``) and a worker launcher has
    ``launch(function, *args, **kwargs)``, returning rank 0's result.
    """

    #: True: this process continues as rank 0; False: the work runs in started workers.
    starts_in_place: bool

    def teardown(self) -> None:
        """Forget the processes started (called from ``Strategy.teardown``)."""
        ...


def runs_in_workers(launcher: Optional[Any]) -> bool:
    """True when the calling process must hand the work to started workers."""
    return launcher is not None and not getattr(launcher, "starts_in_place", False)
