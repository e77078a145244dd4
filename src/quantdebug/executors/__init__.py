"""Where work runs: in this process (the default) or spread over workers, with mergeable results."""

from ._local import Executor, LocalExecutor, ShardedDataset
from ._ray import RayExecutor

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "ShardedDataset"]
