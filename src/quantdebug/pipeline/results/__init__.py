"""Results: layer rows, model statistics, CSV and JSON output, coverage."""

from quantdebug.pipeline.results._results import (
    CSV_NAME,
    JSON_NAME,
    LayerRow,
    Statistics,
    compare_statistics,
    rmse_over_scale,
)
from quantdebug.pipeline.results._weights import weight_statistics

__all__ = [
    "CSV_NAME",
    "JSON_NAME",
    "LayerRow",
    "Statistics",
    "compare_statistics",
    "rmse_over_scale",
    "weight_statistics",
]
