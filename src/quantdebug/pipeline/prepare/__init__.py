"""Stage 1, load and prepare: read the model (external data included), pre-process it once, cached.

Entry: ``prepared_model(source, config) -> PreparedModel``.
"""

from quantdebug.pipeline.prepare._load import (
    ModelSource,
    check_runtime_ops,
    load_model,
)
from quantdebug.pipeline.prepare._prepared import (
    PreparedModel,
    needs_16bit,
    prepared_for_quantized,
    prepared_model,
)
from quantdebug.pipeline.prepare._preprocess import (
    Preprocessed,
    default_opset,
    preprocess,
)
from quantdebug.support import publish as _publish

__all__ = [
    "ModelSource",
    "PreparedModel",
    "Preprocessed",
    "check_runtime_ops",
    "default_opset",
    "load_model",
    "needs_16bit",
    "prepared_for_quantized",
    "prepared_model",
    "preprocess",
]

_publish(__name__, globals(), __all__)
