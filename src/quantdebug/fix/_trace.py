"""A saved fix search read back for the report: the trace ``fix`` saves (``trace_path=``) or ``FIXED.fix.json``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantdebug.errors import ConfigError
from quantdebug.support import _io

TRACE_FORMAT = "quantdebug.fix-trace"
RESULT_SUFFIX = ".fix.json"  # what ``quantdebug fix -o FIXED.onnx`` writes beside the model


def read_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fix search in the form the report shows (``Statistics.extras["fix"]``).

    The trace file has no result yet: the float and int8 qualities come from its baseline
    entries, and the fixed quality only where the file records it (``FIXED.fix.json`` does).
    """
    data = _io.read_json_object(Path(path), ConfigError, "fix trace")
    trace = data.get("trace")
    known = data.get("format") == TRACE_FORMAT or "fixed_quality" in data
    if not known or not isinstance(trace, Sequence) or not all(isinstance(t, Mapping) for t in trace):
        raise ConfigError(
            f"{str(path)!r} is not a fix trace: give the file 'quantdebug fix --trace' writes "
            f"or the {RESULT_SUFFIX} it writes beside the fixed model"
        )
    out: dict[str, Any] = {key: data[key] for key in ("target", "ranking", "evaluations", "message") if key in data}
    out["trace"] = [dict(t) for t in trace]
    for step in ("float", "int8"):
        given = data.get(f"{step}_quality")
        if given is None:
            given = next((t.get("quality") for t in trace if t.get("step") == step), None)
        if isinstance(given, int | float) and not math.isnan(given):
            out[f"{step}_quality"] = float(given)
    if isinstance(data.get("fixed_quality"), int | float):
        out["fixed_quality"] = float(data["fixed_quality"])
    out.setdefault("evaluations", len(trace))
    return out


def trace_in_folder(folder: str | os.PathLike[str]) -> Path | None:
    """The one ``*.fix.json`` in a statistics folder, or None; more than one is ambiguous."""
    found = sorted(Path(folder).glob(f"*{RESULT_SUFFIX}")) if Path(folder).is_dir() else []
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"{str(folder)!r} holds several fix results ({names}); choose one with --fix")
    return found[0] if found else None
