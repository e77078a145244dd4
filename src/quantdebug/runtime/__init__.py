"""The one place where onnxruntime sessions are created."""

from quantdebug.runtime._session import make_session, optimize_to_file, optimized_model

__all__ = ["make_session", "optimize_to_file", "optimized_model"]
