"""Load and prepare: read the model (external data included) and pre-process it once, cached."""

from quantdebug.pipeline.prepare._load import load_model

__all__ = ["load_model"]
