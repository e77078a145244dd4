"""Stage 5, run: build the debug graph, stream the debug dataset through it and accumulate the metrics.

Entry: ``debug_job(plan, graph, options, float_model) -> DebugJob`` (what executors ship), then
``run_debug(job.loop(), dataset, state) -> RunState`` in this process or ``Executor.run_debug``.
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
from quantdebug.pipeline.run._probe import (
    TensorProbe,
    unit_named,
)
from quantdebug.pipeline.run._run import (
    DebugJob,
    DebugLoop,
    RunState,
    debug_session,
    skip,
)
from quantdebug.pipeline.run._stage import (
    DebugRun,
    debug_job,
    run_debug,
)
from quantdebug.support import publish as _publish

__all__ = [
    "METRICS_OUTPUT",
    "ROWS_INPUT",
    "SIZES_OUTPUT",
    "DebugGraph",
    "DebugJob",
    "DebugLoop",
    "DebugRun",
    "MeanAccumulator",
    "RunState",
    "TensorProbe",
    "build_debug_model",
    "debug_job",
    "debug_session",
    "default_metrics",
    "run_debug",
    "skip",
    "unit_named",
]

_publish(__name__, globals(), __all__)
