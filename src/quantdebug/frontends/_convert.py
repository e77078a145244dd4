"""Recognise a framework model (or a .tflite/.keras/.h5 path) and convert it to ONNX; None for anything else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from quantdebug.errors import ConfigError
from quantdebug.frontends._tensorflow import KERAS_SUFFIXES, from_keras, from_tflite, is_keras_model
from quantdebug.frontends._torch import from_torch, is_torch_module


def framework_of(obj: object) -> str | None:
    """'torch', 'keras', 'tflite' or None, without importing a framework the object does not come from."""
    if isinstance(obj, str | os.PathLike):
        suffix = Path(obj).suffix.lower()
        if suffix == ".tflite":
            return "tflite"
        if suffix in KERAS_SUFFIXES:
            return "keras"
        return None
    if isinstance(obj, bytes | bytearray | onnx.ModelProto):
        return None
    if is_torch_module(obj):
        return "torch"
    if is_keras_model(obj):
        return "keras"
    return None


def convert(obj: object, sample: list[np.ndarray] | Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto | None:
    """The verified ONNX model for a torch module, a Keras model or a .tflite/.keras/.h5 path; else None.

    ``sample`` (one array per model input, e.g. the dataset's first sample; a dict gives a torch module
    keyword arguments) is what the conversion is verified on; a torch module also needs it as its
    example input.
    """
    kind = framework_of(obj)
    if kind is None:
        return None
    if sample is not None and not isinstance(sample, list | tuple | Mapping):
        sample = [sample]  # one array for a one-input model
    samples = [sample] if sample is not None else None
    if kind == "torch":
        if sample is None:
            raise ConfigError(
                "a torch module needs example inputs to be exported; give a dataset, or export it first with "
                "qd.from_torch(module, example_inputs)"
            )
        return from_torch(obj, sample if isinstance(sample, Mapping) else tuple(sample))
    if kind == "keras":
        return from_keras(obj, samples=samples)
    assert isinstance(obj, str | os.PathLike)
    return from_tflite(obj, samples=samples)
