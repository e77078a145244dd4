"""The ``quantdebug`` command line: calibrate, quantize, debug, report, compare and fix ONNX models.

Thin commands over the public API, one module per command (``_calibrate``, ``_debug``, ``_report``,
``_fix``, ``_demo``), their shared options in ``_options`` and ``_common``; the text they print
comes from `quantdebug.report`.
"""

from quantdebug.cli._main import cli, main
from quantdebug.support import publish as _publish

__all__ = ["cli", "main"]

_publish(__name__, globals(), __all__)
