"""The one place where onnxruntime sessions are created."""

from quantdebug.runtime._session import (
    PROVIDERS,
    make_session,
    optimize_to_file,
    optimized_model,
)
from quantdebug.support import publish as _publish

__all__ = [
    "PROVIDERS",
    "make_session",
    "optimize_to_file",
    "optimized_model",
]

_publish(__name__, globals(), __all__)
