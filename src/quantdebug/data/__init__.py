"""Dataset adapters: turn what users pass into validated, batched feeds for onnxruntime."""

from quantdebug.data._dataset import (
    Dataset,
    InputSpec,
    as_dataset,
    input_specs,
    is_ray_dataset,
    layout_hint,
)

__all__ = ["Dataset", "InputSpec", "as_dataset", "input_specs", "is_ray_dataset", "layout_hint"]
