"""Stage 6, results: layer rows, model statistics, CSV and JSON output, coverage, weight statistics.

Entry: ``layer_rows(plan, graph, state, covers, tensor_index) -> list[LayerRow]``, then ``Statistics``.
"""

from quantdebug.pipeline.results._coverage import (
    node_coverage,
)
from quantdebug.pipeline.results._provenance import (
    cpu_flags,
    provenance,
)
from quantdebug.pipeline.results._results import (
    CSV_NAME,
    FORMAT,
    JSON_NAME,
    LayerRow,
    Statistics,
    compare_statistics,
    csv_safe,
    rmse_over_scale,
)
from quantdebug.pipeline.results._rows import (
    layer_rows,
    model_statistics,
    with_impact,
    worst_tensors,
)
from quantdebug.pipeline.results._weights import (
    weight_statistics,
)
from quantdebug.support import publish as _publish

__all__ = [
    "CSV_NAME",
    "FORMAT",
    "JSON_NAME",
    "LayerRow",
    "Statistics",
    "compare_statistics",
    "cpu_flags",
    "csv_safe",
    "layer_rows",
    "model_statistics",
    "node_coverage",
    "provenance",
    "rmse_over_scale",
    "weight_statistics",
    "with_impact",
    "worst_tensors",
]

_publish(__name__, globals(), __all__)
