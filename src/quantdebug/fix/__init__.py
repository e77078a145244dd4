"""Sensitivity ranking and the search for the fewest changes (int16, float, per-channel, calibration, clamp)."""

from quantdebug.fix._culprits import COLUMNS, CULPRIT_SAMPLES, REASONS, number
from quantdebug.fix._result import Candidate, FixResult, TraceEntry
from quantdebug.fix._search import LEVERS, FixInterrupted
from quantdebug.fix._settings import onnxruntime_settings
from quantdebug.fix._trace import read_trace, trace_in_folder

__all__ = [
    "COLUMNS",
    "CULPRIT_SAMPLES",
    "LEVERS",
    "REASONS",
    "Candidate",
    "FixInterrupted",
    "FixResult",
    "TraceEntry",
    "number",
    "onnxruntime_settings",
    "read_trace",
    "trace_in_folder",
]
