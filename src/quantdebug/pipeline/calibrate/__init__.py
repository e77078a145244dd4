"""Ranges from the representative dataset: one streaming pass, a serializable, mergeable Calibration."""

from quantdebug.pipeline.calibrate._calibrate import (
    Calibration,
    Calibrator,
    batching_is_safe,
    calibrate_model,
    has_control_flow,
    model_fingerprint,
)
from quantdebug.pipeline.calibrate._stats import bin_edges

__all__ = [
    "Calibration",
    "Calibrator",
    "batching_is_safe",
    "bin_edges",
    "calibrate_model",
    "has_control_flow",
    "model_fingerprint",
]
