"""Model frontends: PyTorch, Keras and TFLite models to verified ONNX, and framework datasets as samples.

The frameworks are optional extras (``quantdebug[torch]``, ``quantdebug[tensorflow]``), imported only when used.
"""

from ._common import MissingExtraError
from ._convert import convert, framework_of
from ._data import adapt_dataset, as_seed_dataset, check_layout, first_sample, is_framework_dataset, layout_hint
from ._tensorflow import from_keras, from_tflite
from ._torch import from_torch
from ._verify import DEFAULT_ATOL, DEFAULT_RTOL, ConversionError, OutputCheck, VerificationReport, verify_conversion

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
    "from_keras",
    "from_tflite",
    "from_torch",
    "is_framework_dataset",
    "layout_hint",
    "verify_conversion",
]
