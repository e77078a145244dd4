"""quantdebug: find and fix the layers that break an ONNX model when it is quantized to integers."""

from quantdebug._api import calibrate, fix, quantize
from quantdebug._debugger import QuantizationDebugger
from quantdebug.config import DebugOptions, QuantConfig
from quantdebug.errors import (
    CalibrationError,
    ConfigError,
    DatasetError,
    EvalFunctionError,
    MissingExtraError,
    ModelError,
    ModelTooLargeError,
    QuantDebugError,
    RunInterrupted,
)
from quantdebug.executors import LocalExecutor, RayExecutor, ShardedDataset
from quantdebug.fix import FixInterrupted, FixOptions, FixResult, onnxruntime_settings
from quantdebug.frontends import from_keras, from_tflite, from_torch
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import weight_changes
from quantdebug.pipeline.results import LayerRow, Statistics, compare_statistics
from quantdebug.support import publish as _publish

__version__ = "0.1.0"  # written once: pyproject.toml reads it (dynamic version)

__all__ = [
    "Calibration",
    "CalibrationError",
    "ConfigError",
    "DatasetError",
    "DebugOptions",
    "EvalFunctionError",
    "FixInterrupted",
    "FixOptions",
    "FixResult",
    "LayerRow",
    "LocalExecutor",
    "MissingExtraError",
    "ModelError",
    "ModelTooLargeError",
    "QuantConfig",
    "QuantDebugError",
    "QuantizationDebugger",
    "RayExecutor",
    "RunInterrupted",
    "ShardedDataset",
    "Statistics",
    "__version__",
    "calibrate",
    "compare_statistics",
    "fix",
    "from_keras",
    "from_tflite",
    "from_torch",
    "onnxruntime_settings",
    "quantize",
    "weight_changes",
]

_publish(__name__, globals(), __all__)
