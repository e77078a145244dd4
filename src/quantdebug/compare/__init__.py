"""Metric accumulators (mergeable), layer and model statistics, CSV and JSON output."""
