"""Where work runs: in this process (the default) or spread over workers, with mergeable results."""

from ._local import Executor, LocalExecutor, ShardedDataset

__all__ = ["Executor", "LocalExecutor", "ShardedDataset"]
