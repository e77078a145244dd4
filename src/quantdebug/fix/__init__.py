"""Sensitivity ranking and the search for the fewest changes (int16, float, per-channel, calibration, clamp)."""

from ._culprits import REASONS
from ._result import Candidate, FixResult, TraceEntry
from ._search import LEVERS, FixInterrupted
from ._settings import onnxruntime_settings
from ._trace import read_trace, trace_in_folder

__all__ = [
    "LEVERS",
    "REASONS",
    "Candidate",
    "FixInterrupted",
    "FixResult",
    "TraceEntry",
    "onnxruntime_settings",
    "read_trace",
    "trace_in_folder",
]
