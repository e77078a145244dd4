"""Where work runs: in this process (the default) or spread over workers, with mergeable results."""

from quantdebug.executors._local import Executor, LocalExecutor, ShardedDataset
from quantdebug.executors._ray import RayExecutor

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "ShardedDataset"]
