"""Where work runs: in this process (the default) or spread over workers, with mergeable results."""

from quantdebug.executors._local import (
    Executor,
    LocalExecutor,
    ShardedDataset,
)
from quantdebug.executors._ray import (
    RayExecutor,
    ray_dataset_of,
)
from quantdebug.support import publish as _publish

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "ShardedDataset",
    "ray_dataset_of",
]

_publish(__name__, globals(), __all__)
