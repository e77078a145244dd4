"""Run: build the debug graph, stream the debug dataset through it and accumulate the metrics."""
