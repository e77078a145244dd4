"""Ranges from the representative dataset: one streaming pass, a serializable, mergeable Calibration."""

from quantdebug.pipeline.calibrate._calibrate import Calibration, Calibrator, calibrate_model, model_fingerprint

__all__ = ["Calibration", "Calibrator", "calibrate_model", "model_fingerprint"]
