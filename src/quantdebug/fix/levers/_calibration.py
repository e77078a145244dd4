"""The calibration lever: tensors whose MinMax range a few outliers set are calibrated by percentile."""

from __future__ import annotations

from collections.abc import Sequence

from quantdebug.fix.levers._base import Changes, Lever, LeverContext
from quantdebug.fix.levers._clamp import SENTINEL
from quantdebug.pipeline.calibrate import Calibration

OUTLIER_RATIO = 4.0  # MinMax range this many times the percentile range: a few values set the scale
METHOD = "percentile"


class CalibrationMethod(Lever):
    name = "calibration"
    order = 2
    only_while_unmet = True  # another range changes every downstream scale: only when still needed

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        del suspects
        wide = outlier_tensors(context.calibration, context.tensors)
        return {"calibration": tuple((t, METHOD) for t in wide)} if wide else {}

    def label(self, changes: Changes) -> str:
        return f"calibration: {len(changes['calibration'])} tensors"


LEVER = CalibrationMethod()


def outlier_tensors(calibration: Calibration, tensors: Sequence[str], percentile: float = 99.99) -> list[str]:
    """Tensors whose MinMax range is much wider than the range that holds almost all of their values."""
    out = []
    for name in tensors:
        stats = calibration.stats.get(name)
        if stats is None or stats.count < 100 or max(abs(stats.minimum), abs(stats.maximum)) >= SENTINEL:
            continue
        lo, hi = calibration.tensor_range(name, "minmax")
        plo, phi = calibration.tensor_range(name, "percentile", percentile)
        full, core = max(hi, 0.0) - min(lo, 0.0), max(phi, 0.0) - min(plo, 0.0)
        if core > 0 and full / core >= OUTLIER_RATIO:
            out.append(name)
    return out
