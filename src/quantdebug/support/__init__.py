"""Helpers every package uses: atomic file writes, progress bars, external data of models over 2 GB
(``quantdebug.support.external``), public paths for re-exported objects."""

from quantdebug.support._io import (
    FORMULA_CHARS,
    atomic_model_with_data,
    atomic_open,
    read_json_object,
    write_bytes,
    write_text,
)
from quantdebug.support._progress import progress_bar
from quantdebug.support._public import publish

__all__ = [
    "FORMULA_CHARS",
    "atomic_model_with_data",
    "atomic_open",
    "progress_bar",
    "publish",
    "read_json_object",
    "write_bytes",
    "write_text",
]

publish(__name__, globals(), __all__)
