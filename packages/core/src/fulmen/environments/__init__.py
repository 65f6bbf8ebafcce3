from fulmen.environments.base import ClusterEnvironment
from fulmen.environments.local import LocalEnvironment
from fulmen.environments.lsf import LSFEnvironment
from fulmen.environments.mpi import MPIEnvironment
from fulmen.environments.slurm import SLURMEnvironment
from fulmen.environments.torchelastic import TorchElasticEnvironment

__all__ = [
    "ClusterEnvironment",
    "LocalEnvironment",
    "LSFEnvironment",
    "MPIEnvironment",
    "SLURMEnvironment",
    "TorchElasticEnvironment",
]
