"""Load and prepare: read the model (external data included) and pre-process it once, cached."""

from quantdebug.pipeline.prepare._external import as_proto, has_references, release, tensor_like, to_array, write_model
from quantdebug.pipeline.prepare._load import ModelSource, load_model

__all__ = [
    "ModelSource",
    "as_proto",
    "has_references",
    "load_model",
    "release",
    "tensor_like",
    "to_array",
    "write_model",
]
