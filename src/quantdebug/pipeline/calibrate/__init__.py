"""Ranges from the representative dataset: one streaming pass, a serializable, mergeable Calibration."""

from quantdebug.pipeline.calibrate._calibrate import Calibration, Calibrator, calibrate_model, model_fingerprint
from quantdebug.pipeline.calibrate._stats import bin_edges

__all__ = ["Calibration", "Calibrator", "bin_edges", "calibrate_model", "model_fingerprint"]
