"""Results: layer rows, model statistics, CSV and JSON output, coverage."""

from quantdebug.pipeline.results._results import rmse_over_scale
from quantdebug.pipeline.results._weights import weight_statistics

__all__ = [
    "rmse_over_scale",
    "weight_statistics",
]
