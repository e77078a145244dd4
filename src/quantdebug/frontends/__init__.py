"""Model frontends: PyTorch, Keras and TFLite models to verified ONNX, and framework datasets as samples.

The frameworks are optional extras (``quantdebug[torch]``, ``quantdebug[tensorflow]``), imported only when used.
"""

from quantdebug.frontends._common import MissingExtraError
from quantdebug.frontends._convert import convert, framework_of
from quantdebug.frontends._data import (
    adapt_dataset,
    as_seed_dataset,
    check_layout,
    first_sample,
    is_framework_dataset,
    layout_hint,
)
from quantdebug.frontends._framework import from_framework
from quantdebug.frontends._tensorflow import from_keras, from_tflite
from quantdebug.frontends._torch import from_torch
from quantdebug.frontends._verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ConversionError,
    OutputCheck,
    VerificationReport,
    verify_conversion,
)
from quantdebug.support import publish as _publish

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ConversionError",
    "MissingExtraError",
    "OutputCheck",
    "VerificationReport",
    "adapt_dataset",
    "as_seed_dataset",
    "check_layout",
    "convert",
    "first_sample",
    "framework_of",
    "from_framework",
    "from_keras",
    "from_tflite",
    "from_torch",
    "is_framework_dataset",
    "layout_hint",
    "verify_conversion",
]

_publish(__name__, globals(), __all__)
