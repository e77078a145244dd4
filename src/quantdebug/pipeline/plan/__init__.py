"""Stage 4, plan: precisions per node, the QDQ model onnxruntime's quantizer makes from the ranges, and the
mapping of float nodes to quantized units.

Entry: ``build_plan(float_model, qdq, intended) -> Plan`` (the QDQ model from
``PreparedModel.quantize`` / ``quantize_with_ranges``).
"""

from quantdebug.pipeline.plan._plan import (
    Plan,
    RowInfo,
    build_plan,
    optimize_quantized,
)
from quantdebug.pipeline.plan._quantize import (
    QUANT_TYPES,
    PlannedPrecision,
    default_op_types,
    quantize_with_ranges,
    tensor_overrides,
)
from quantdebug.pipeline.plan._select import (
    Selector,
    resolve_precisions,
    unguard,
)
from quantdebug.pipeline.plan._units import (
    QDQ_OPS,
    QParams,
    Skipped,
    Unit,
    UnitMapper,
    topo_index,
)
from quantdebug.pipeline.plan._weights import (
    WeightFit,
    apply_fit,
    fit_records,
    fit_scope,
    fit_weights,
    limited,
    missing_data_error,
    stamp,
    weight_changes,
)
from quantdebug.support import publish as _publish

__all__ = [
    "QDQ_OPS",
    "QUANT_TYPES",
    "Plan",
    "PlannedPrecision",
    "QParams",
    "RowInfo",
    "Selector",
    "Skipped",
    "Unit",
    "UnitMapper",
    "WeightFit",
    "apply_fit",
    "build_plan",
    "default_op_types",
    "fit_records",
    "fit_scope",
    "fit_weights",
    "limited",
    "missing_data_error",
    "optimize_quantized",
    "quantize_with_ranges",
    "resolve_precisions",
    "stamp",
    "tensor_overrides",
    "topo_index",
    "unguard",
    "weight_changes",
]

_publish(__name__, globals(), __all__)
