"""Dataset adapters: turn what users pass into validated, batched feeds for onnxruntime."""

from quantdebug.data._dataset import Dataset, InputSpec, as_dataset, input_specs, layout_hint
from quantdebug.data._formats import LAYOUTS, ImageOptions, load_callable, open_data

__all__ = [
    "LAYOUTS",
    "Dataset",
    "ImageOptions",
    "InputSpec",
    "as_dataset",
    "input_specs",
    "layout_hint",
    "load_callable",
    "open_data",
]
