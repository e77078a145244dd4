"""Helpers every package uses: atomic file writes, progress bars, provenance metadata."""

from quantdebug.support._io import read_json_object, write_text

__all__ = ["read_json_object", "write_text"]
