"""Helpers every package uses: atomic file writes, progress bars, provenance metadata."""
