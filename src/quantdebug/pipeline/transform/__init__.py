"""Stage 2, transform: weight transforms of the float model that keep its function: BatchNorm folding,
cross-layer equalization and SmoothQuant. Each returns a new model and an account of what it changed.

Entry: ``transform_float(model, config, feeds, nodes) -> (model, records)``.
"""

from quantdebug.pipeline.transform._equalize import (
    CLIP_MODES,
    equalize,
)
from quantdebug.pipeline.transform._fold import (
    fold_batchnorm,
)
from quantdebug.pipeline.transform._smooth import (
    smooth_quant,
)
from quantdebug.pipeline.transform._stage import transform_float
from quantdebug.support import publish as _publish

__all__ = [
    "CLIP_MODES",
    "equalize",
    "fold_batchnorm",
    "smooth_quant",
    "transform_float",
]

_publish(__name__, globals(), __all__)
