"""quantdebug: find and fix the layers that break an ONNX model when it is quantized to integers."""

from ._debugger import LayerRow, QuantizationDebugger
from .calibration import Calibration
from .config import DebugOptions, QuantConfig
from .errors import CalibrationError, ConfigError, DatasetError, ModelError, QuantDebugError

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "CalibrationError",
    "ConfigError",
    "DatasetError",
    "DebugOptions",
    "LayerRow",
    "ModelError",
    "QuantConfig",
    "QuantDebugError",
    "QuantizationDebugger",
    "__version__",
]
