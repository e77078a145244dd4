"""Stage 5, run: build the debug graph, stream the debug dataset through it and accumulate the metrics.

Entry: ``run_debug(job, dataset, state) -> RunState`` over a ``DebugJob`` (what executors ship).
"""

from quantdebug.pipeline.run._accumulate import (
    MeanAccumulator,
    default_metrics,
)
from quantdebug.pipeline.run._debug_model import (
    METRICS_OUTPUT,
    ROWS_INPUT,
    SIZES_OUTPUT,
    DebugGraph,
    build_debug_model,
)
from quantdebug.pipeline.run._run import (
    DebugJob,
    DebugLoop,
    RunState,
    debug_session,
    skip,
)
from quantdebug.support import publish as _publish

__all__ = [
    "METRICS_OUTPUT",
    "ROWS_INPUT",
    "SIZES_OUTPUT",
    "DebugGraph",
    "DebugJob",
    "DebugLoop",
    "MeanAccumulator",
    "RunState",
    "build_debug_model",
    "debug_session",
    "default_metrics",
    "skip",
]

_publish(__name__, globals(), __all__)
