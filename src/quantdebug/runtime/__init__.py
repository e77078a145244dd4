"""The one place where onnxruntime sessions are created."""

from quantdebug.runtime._session import OPT_LEVELS, make_session, optimize_to_file, optimized_model

__all__ = ["OPT_LEVELS", "make_session", "optimize_to_file", "optimized_model"]
