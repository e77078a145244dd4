"""The fix: sensitivity ranking and the search for the fewest changes (int16, float, per-channel, calibration, clamp).

Split as the job is (Polygraphy's ``debug precision``): ``_strategy`` picks candidates over an
``_evaluator`` that quantizes and measures them, ``_trace`` records and resumes, ``_ranking``
(with ``_switch`` and ``_evidence``) orders the suspects, ``levers/`` holds one handler per
lever, and ``_fix`` is ``qd.fix`` itself. ``FixOptions`` carries every knob through all of them.
"""

from quantdebug.fix._culprits import COLUMNS, CULPRIT_SAMPLES, REASONS, measure_culprits, number, stored_culprits
from quantdebug.fix._evidence import LayerEvidence, layer_evidence
from quantdebug.fix._fix import fix, run_search
from quantdebug.fix._options import FixOptions
from quantdebug.fix._ranking import noise_share, sensitivity_table
from quantdebug.fix._result import Candidate, FixInterrupted, FixResult, TraceEntry
from quantdebug.fix._settings import onnxruntime_settings
from quantdebug.fix._suggest import MOST_NOISE, apply_suggestion, config_call, fewest, quantize_command
from quantdebug.fix._switch import SwitchRunner, output_sqnr
from quantdebug.fix._trace import read_trace, trace_in_folder
from quantdebug.fix.levers import DEFAULT_LEVERS, LEVERS
from quantdebug.support import publish as _publish

__all__ = [
    "COLUMNS",
    "CULPRIT_SAMPLES",
    "DEFAULT_LEVERS",
    "LEVERS",
    "MOST_NOISE",
    "REASONS",
    "Candidate",
    "FixInterrupted",
    "FixOptions",
    "FixResult",
    "LayerEvidence",
    "SwitchRunner",
    "TraceEntry",
    "apply_suggestion",
    "config_call",
    "fewest",
    "fix",
    "layer_evidence",
    "measure_culprits",
    "noise_share",
    "number",
    "onnxruntime_settings",
    "output_sqnr",
    "quantize_command",
    "read_trace",
    "run_search",
    "sensitivity_table",
    "stored_culprits",
    "trace_in_folder",
]

_publish(__name__, globals(), __all__)
