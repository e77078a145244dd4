"""Turns (pre-processed float model, ranges, QuantConfig, exclusions) into a QDQ model with onnxruntime's quantizer."""

from quantdebug.pipeline.plan._plan import Plan, build_plan
from quantdebug.pipeline.plan._quantize import (
    QUANT_TYPES,
    PlannedPrecision,
    default_op_types,
    quantize_with_ranges,
    tensor_overrides,
)
from quantdebug.pipeline.plan._units import Unit
from quantdebug.pipeline.plan._weights import weight_changes

__all__ = [
    "QUANT_TYPES",
    "Plan",
    "PlannedPrecision",
    "Unit",
    "build_plan",
    "default_op_types",
    "quantize_with_ranges",
    "tensor_overrides",
    "weight_changes",
]
