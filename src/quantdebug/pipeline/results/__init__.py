"""Results: layer rows, model statistics, CSV and JSON output, coverage."""
