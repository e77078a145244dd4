"""Dataset adapters: turn what users pass into validated, batched feeds for onnxruntime."""

from quantdebug.data._dataset import (
    Dataset,
    InputSpec,
    as_dataset,
    batches,
    input_specs,
    is_ray_dataset,
    layout_hint,
)
from quantdebug.data._formats import IMAGE_SUFFIXES, LAYOUTS, DataSource, ImageOptions, load_callable, open_data
from quantdebug.support import publish as _publish

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "DataSource",
    "Dataset",
    "ImageOptions",
    "InputSpec",
    "as_dataset",
    "batches",
    "input_specs",
    "is_ray_dataset",
    "layout_hint",
    "load_callable",
    "open_data",
]

_publish(__name__, globals(), __all__)
