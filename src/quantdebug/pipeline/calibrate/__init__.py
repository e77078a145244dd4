"""Stage 3, calibrate: ranges from the representative dataset in one streaming pass; a serializable,
mergeable Calibration.

Entry: ``calibrate_model(model, dataset) -> Calibration``.
"""

from quantdebug.pipeline.calibrate._calibrate import (
    CONTROL_FLOW,
    FINGERPRINT_VERSION,
    Calibration,
    CalibrationRunner,
    Calibrator,
    augmented,
    batching_is_safe,
    calibrate_model,
    can_stack,
    float_tensors,
    has_control_flow,
    model_fingerprint,
)
from quantdebug.pipeline.calibrate._stats import (
    NBINS,
    TensorStats,
    bin_edges,
    magnitude_edges,
)
from quantdebug.support import publish as _publish

__all__ = [
    "CONTROL_FLOW",
    "FINGERPRINT_VERSION",
    "NBINS",
    "Calibration",
    "CalibrationRunner",
    "Calibrator",
    "TensorStats",
    "augmented",
    "batching_is_safe",
    "bin_edges",
    "calibrate_model",
    "can_stack",
    "float_tensors",
    "has_control_flow",
    "magnitude_edges",
    "model_fingerprint",
]

_publish(__name__, globals(), __all__)
