"""Sensitivity ranking and the search for the fewest changes (int16, float, per-channel, calibration, clamp)."""

from ._culprits import REASONS
from ._result import Candidate, FixResult, TraceEntry
from ._search import LEVERS, FixInterrupted

__all__ = ["LEVERS", "REASONS", "Candidate", "FixInterrupted", "FixResult", "TraceEntry"]
