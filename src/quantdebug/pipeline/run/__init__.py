"""Run: build the debug graph, stream the debug dataset through it and accumulate the metrics."""

from quantdebug.pipeline.run._debug_model import build_debug_model
from quantdebug.pipeline.run._run import DebugJob

__all__ = [
    "DebugJob",
    "build_debug_model",
]
