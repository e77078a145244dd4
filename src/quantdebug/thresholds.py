"""The numbers that decide what counts as a problem, written once: the rmse/scale severity scale
that the CLI, the demo, the report, the plots and `Statistics.suspects` share, and the tutorial's
denylist recipe (suspects above 0.7 plus the first few layers)."""

from __future__ import annotations

import math

IDEAL_RMSE_OVER_SCALE = 1.0 / math.sqrt(12.0)  # uniform rounding noise: ~0.289 of one quantization step
WATCH_RMSE_OVER_SCALE = 0.45
SUSPECT_RMSE_OVER_SCALE = 0.7  # the tutorial's threshold for a suspect layer
SEVERE_RMSE_OVER_SCALE = 2.0
FEW_ELEMENTS = 16  # below this the rmse/scale rule of thumb is noisy
FIRST_LAYERS = 5  # the tutorial also keeps the first few layers in float

# level -> (label, colour); order is best to worst
SEVERITY: dict[str, tuple[str, str]] = {
    "ok": (f"near ideal (≤ {WATCH_RMSE_OVER_SCALE:g})", "#3f9c6d"),
    "watch": (f"elevated ({WATCH_RMSE_OVER_SCALE:g} – {SUSPECT_RMSE_OVER_SCALE:g})", "#e3a33b"),
    "suspect": (f"suspect ({SUSPECT_RMSE_OVER_SCALE:g} – {SEVERE_RMSE_OVER_SCALE:g})", "#d9534f"),
    "severe": (f"severe (> {SEVERE_RMSE_OVER_SCALE:g})", "#8b1e3f"),
    "unknown": ("not available", "#9aa0a6"),
}


def severity(rmse_over_scale: float) -> str:
    """The severity level of one rmse/scale value (a key of `SEVERITY`)."""
    v = rmse_over_scale
    if math.isnan(v):
        return "unknown"
    if v <= WATCH_RMSE_OVER_SCALE:
        return "ok"
    if v <= SUSPECT_RMSE_OVER_SCALE:
        return "watch"
    if v <= SEVERE_RMSE_OVER_SCALE:
        return "suspect"
    return "severe"
