"""Where this process sits in a job: world size, ranks, the rendezvous address.

Environments are detected in ``detection_priority`` order (highest first); the local one has
the lowest priority and always matches, so a plain ``python train.py`` needs no settings.
"""

from __future__ import annotations

from typing import Optional


class ClusterEnvironment:
    """Base class of cluster environments: what the scheduler or launcher that started this
    process says about the job.

    Subclass it for a scheduler fulmen does not know, set ``name`` and a ``detection_priority``
    above the generic ones it could be mistaken for, implement :meth:`detect` and the rank
    methods from the scheduler's variables, and register it with ``register_environments``.
    Strategies read it to form the process group; it starts nothing itself."""

    name: str = ""
    detection_priority: int = 0

    @classmethod
    def detect(cls) -> bool:
        """True when this process was started by the scheduler this class describes."""
        return False

    @property
    def creates_processes_externally(self) -> bool:
        """True when a launcher (torchrun, srun, mpirun) already started every process."""
        return False

    @property
    def main_address(self) -> str:
        """The address of the host of rank 0, where every rank meets to form the process group
        (``MASTER_ADDR`` for ``torch.distributed``)."""
        return "127.0.0.1"

    @property
    def main_port(self) -> int:
        """The port rank 0 listens on for the rendezvous (``MASTER_PORT``); 0 while none is
        known yet."""
        return 0

    def world_size(self) -> int:
        """How many processes the whole job has, across all nodes."""
        return 1

    def global_rank(self) -> int:
        """This process's index in the job, ``0 <= global_rank < world_size``; rank 0 writes files."""
        return 0

    def local_rank(self) -> int:
        """This process's index on its node; strategies pick the device with it."""
        return 0

    def node_rank(self) -> int:
        """The index of the node this process runs on."""
        return 0

    @classmethod
    def scheduled_job(cls) -> bool:
        """True when this process belongs to a job of this environment's scheduler, even if
        it was not started as one of its ranks (a SLURM batch script running ``python
        train.py`` directly): preemption then asks this class to requeue the job."""
        return False

    def requeue(self) -> Optional[str]:
        """Ask the scheduler to run this job again after a preemption save.

        Returns a sentence saying what happened (printed with the exit message), or ``None``
        where the environment has no queue to go back to; the default. Called on rank 0
        only, after the checkpoint is durable, right before the process exits with code 75.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
