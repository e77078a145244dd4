"""Results: layer rows, model statistics, CSV and JSON output, coverage."""

from quantdebug.pipeline.results._results import CSV_NAME, JSON_NAME, LayerRow, Statistics, compare_statistics

__all__ = ["CSV_NAME", "JSON_NAME", "LayerRow", "Statistics", "compare_statistics"]
