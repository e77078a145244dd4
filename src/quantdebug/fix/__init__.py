"""Sensitivity ranking and the search for the fewest changes (int16, float, per-channel, calibration, clamp)."""

from quantdebug.fix._culprits import CULPRIT_SAMPLES, REASONS, measure_culprits, stored_culprits
from quantdebug.fix._evidence import layer_evidence
from quantdebug.fix._result import Candidate, FixResult, TraceEntry
from quantdebug.fix._search import LEVERS, FixInterrupted, Search, sensitivity_table
from quantdebug.fix._settings import onnxruntime_settings
from quantdebug.fix._switch import SwitchRunner
from quantdebug.fix._trace import read_trace, trace_in_folder

__all__ = [
    "CULPRIT_SAMPLES",
    "LEVERS",
    "REASONS",
    "Candidate",
    "FixInterrupted",
    "FixResult",
    "Search",
    "SwitchRunner",
    "TraceEntry",
    "layer_evidence",
    "measure_culprits",
    "onnxruntime_settings",
    "read_trace",
    "sensitivity_table",
    "stored_culprits",
    "trace_in_folder",
]
