from fulmen.environments.base import ClusterEnvironment
from fulmen.environments.local import LocalEnvironment

__all__ = ["ClusterEnvironment", "LocalEnvironment"]
