"""What every entry point does first: a framework model (PyTorch, Keras, TFLite) and its datasets made
ONNX and seed-style, the conversion checked on the first sample; anything else passes through."""

from __future__ import annotations

from quantdebug.frontends._convert import convert, framework_of
from quantdebug.frontends._data import adapt_dataset, first_sample


def from_framework(model: object, *datasets: object) -> tuple[object, list[object]]:
    """Turn a PyTorch/Keras/TFLite model and framework datasets (DataLoader, tf.data, arrays) into
    an ONNX model and seed-style datasets; the conversion is checked on the first sample."""
    adapted = [adapt_dataset(d) if d is not None else None for d in datasets]
    if framework_of(model):
        source = next((d for d in adapted if d is not None), None)
        model = convert(model, first_sample(source) if source is not None else None)
    return model, adapted
