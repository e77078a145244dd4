"""The fix trace: every evaluation, saved as it happens, the cache a resumed search replays, and the file read back.

``Trace`` is what the search writes (``trace_path=``) and resumes from (``resume=``); ``read_trace``
reads that file, or the ``FIXED.fix.json`` the CLI writes, in the form the report shows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantdebug.errors import ConfigError
from quantdebug.fix._options import FixOptions
from quantdebug.fix._result import Candidate, TraceEntry
from quantdebug.support import read_json_object, write_text

TRACE_FORMAT = "quantdebug.fix-trace"
RESULT_SUFFIX = ".fix.json"  # what ``quantdebug fix -o FIXED.onnx`` writes beside the model
FLOAT_KEY = "float"  # the cache key of the float baseline (every other key is a Candidate's)


class Trace:
    """The evaluations of one search, in order, saved after each; and the qualities a resumed trace holds.

    ``ranking`` and ``int16_gain_db`` are set by the search when it knows them; they are saved with
    the entries, and so is ``options.to_dict()`` (which options made this trace).
    """

    def __init__(self, options: FixOptions) -> None:
        self.options = options
        self.path = Path(options.trace_path) if options.trace_path is not None else None
        self.entries: list[TraceEntry] = []
        self.cache: dict[str, float] = {}  # candidate key -> quality, from the resumed trace
        self.target = math.nan
        self.ranking: list[dict[str, Any]] = []  # the suspects and the evidence behind each rank
        self.int16_gain_db: float | None = None  # what 16 bits on every suspect gain (see _int16)
        if options.resume is not None:
            self.cache = resumed_qualities(Path(options.resume))

    def cached(self, key: str) -> float | None:
        return self.cache.get(key)

    def append(self, entry: TraceEntry) -> None:
        self.entries.append(entry)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        gain = self.int16_gain_db
        data = {
            "format": TRACE_FORMAT,
            "version": 1,
            "target": self.target,
            "trace": [t.to_dict() for t in self.entries],
            "ranking": self.ranking,
            "int16_gain_db": gain if gain is not None and math.isfinite(gain) else None,
            "options": self.options.to_dict(),
        }
        write_text(self.path, json.dumps(data, indent=1, default=str))


def resumed_qualities(path: Path) -> dict[str, float]:
    """Candidate key -> quality of every evaluation in a saved trace (files without ``options`` too)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot resume from {str(path)!r}: {exc}") from exc
    if not isinstance(data, Mapping) or data.get("format") != TRACE_FORMAT:
        raise ConfigError(f"{str(path)!r} is not a quantdebug fix trace")
    cache: dict[str, float] = {}
    for entry in data.get("trace", []):
        key = FLOAT_KEY if entry["step"] == "float" else Candidate.from_dict(entry["candidate"]).key()
        cache[key] = float(entry["quality"])
    return cache


def read_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fix search in the form the report shows (``Statistics.extras["fix"]``).

    The trace file has no result yet: the float and int8 qualities come from its baseline
    entries, and the fixed quality only where the file records it (``FIXED.fix.json`` does).
    """
    data = read_json_object(Path(path), ConfigError, "fix trace")
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
