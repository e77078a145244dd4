"""quantdebug: find and fix the layers that break an ONNX model when it is quantized to integers."""

from ._api import calibrate, fix, quantize
from ._debugger import QuantizationDebugger
from .calibration import Calibration
from .compare._results import LayerRow, Statistics, compare_statistics
from .config import DebugOptions, QuantConfig
from .errors import (
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
from .executors import LocalExecutor, RayExecutor, ShardedDataset
from .fix import FixInterrupted, FixResult, onnxruntime_settings
from .frontends import from_keras, from_tflite, from_torch

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "CalibrationError",
    "ConfigError",
    "DatasetError",
    "DebugOptions",
    "EvalFunctionError",
    "FixInterrupted",
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
]
