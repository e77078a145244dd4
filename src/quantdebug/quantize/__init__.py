"""Turns (pre-processed float model, ranges, QuantConfig, exclusions) into a QDQ model with onnxruntime's quantizer."""

from ._quantize import PlannedPrecision, default_op_types, quantize_with_ranges
from ._weights import weight_changes

__all__ = ["PlannedPrecision", "default_op_types", "quantize_with_ranges", "weight_changes"]
