"""Keras and TFLite frontends through tf2onnx, each conversion checked against TensorFlow's own run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantdebug.data import input_specs
from quantdebug.errors import ConfigError, ModelError
from quantdebug.frontends._batch import batch_problem
from quantdebug.frontends._common import missing_extra, rename_values, safe_name, set_metadata
from quantdebug.frontends._verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ConversionError,
    input_names,
    normalize_sample,
    verify_conversion,
)

DEFAULT_OPSET = 17
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SYNTH_SEED = 0


def _tf() -> tuple[Any, Any]:
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        import tensorflow as tf  # optional dependency
        import tf2onnx  # optional dependency
    except ImportError as exc:
        raise missing_extra("this frontend", "TensorFlow and tf2onnx", "tensorflow", exc) from exc
    return tf, tf2onnx


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence tf2onnx's INFO/WARNING log and TensorFlow's Python warnings during a conversion."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def is_keras_model(obj: object) -> bool:
    """True for a Keras (3, or tf_keras) model, decided without importing TensorFlow otherwise."""
    roots = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    if "keras" in roots and "keras" in sys.modules:
        import keras  # optional dependency

        if isinstance(obj, keras.Model):
            return True
    if "tf_keras" in roots and "tf_keras" in sys.modules:
        import tf_keras  # optional dependency

        if isinstance(obj, tf_keras.Model):
            return True
    if "tensorflow" in roots and "tensorflow" in sys.modules:
        import tensorflow as tf  # optional dependency

        return isinstance(obj, tf.keras.Model)
    return False


def _synth(shapes: Sequence[tuple[int | str | None, ...]], dtypes: Sequence[Any]) -> list[np.ndarray]:
    """One made-up sample for checking a conversion: uniform [-1, 1) floats, zeros for integers.

    A free batch axis becomes 1, any other free axis 8.
    """
    rng = np.random.default_rng(SYNTH_SEED)
    out = []
    for shape, dtype in zip(shapes, dtypes):
        dims = tuple(d if isinstance(d, int) and d > 0 else (1 if axis == 0 else 8) for axis, d in enumerate(shape))
        if np.dtype(dtype).kind == "f":
            out.append(rng.uniform(-1.0, 1.0, dims).astype(dtype))
        else:
            out.append(np.zeros(dims, dtype=dtype))
    return out


# -- Keras ------------------------------------------------------------------------------------
def _load_keras(model_or_path: object) -> Any:
    if isinstance(model_or_path, str | os.PathLike):
        path = Path(model_or_path)
        if not path.exists():
            raise ModelError(f"Keras model file {str(path)!r} does not exist")
        import keras  # optional dependency

        try:
            with _quiet():
                return keras.models.load_model(str(path), compile=False)
        except Exception as exc:
            raise ConversionError(f"Keras cannot load {str(path)!r}: {str(exc).strip()[:300]}") from exc
    if not is_keras_model(model_or_path):
        raise ConfigError(f"qd.from_keras needs a keras.Model or a .keras/.h5 path; got {type(model_or_path).__name__}")
    return model_or_path


def _keras_inputs(
    model: Any, first: list[np.ndarray] | None
) -> tuple[list[str], list[tuple[int | None, ...]], list[Any]]:
    """Names, shapes (batch as None) and dtypes of the model's inputs; from a sample when the model has none."""
    taken: set[str] = set()
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        inputs = []
    if inputs:
        names = [safe_name(str(getattr(t, "name", "") or ""), taken, f"input_{i}") for i, t in enumerate(inputs)]
        shapes = [tuple(None if d is None else int(d) for d in t.shape) for t in inputs]
        dtypes = [np.dtype(str(getattr(t.dtype, "name", t.dtype))) for t in inputs]
        return names, [(None, *s[1:]) if s else s for s in shapes], dtypes
    if first is None:
        raise ConfigError(
            f"the Keras model {type(model).__name__} has no defined inputs (a subclassed model that was never "
            "called); pass samples=[...] so the input shapes are known"
        )
    names = [safe_name("input" if len(first) == 1 else f"input_{i}", taken, f"input_{i}") for i in range(len(first))]
    return names, [(None, *a.shape[1:]) for a in first], [a.dtype for a in first]


def keras_reference(model: Any) -> Any:
    """A callable arrays -> flat output arrays running ``model(..., training=False)``."""
    tf, _ = _tf()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        x: Any = arrays[0] if len(arrays) == 1 else list(arrays)
        out = model(x, training=False)
        return [np.asarray(t) for t in tf.nest.flatten(out)]

    return run


def _keras_output_names(model: Any, example: list[np.ndarray]) -> list[str]:
    """Output names in ``tf.nest.flatten`` order: a dict's (sorted) keys, else the model's output names."""
    tf, _ = _tf()
    out = model(example[0] if len(example) == 1 else list(example), training=False)
    count = len(tf.nest.flatten(out))
    if isinstance(out, Mapping):
        names = sorted(str(k) for k in out)  # tf.nest.flatten's order for a flat dict
    else:
        names = list(getattr(model, "output_names", None) or [])
    if len(names) != count:
        names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    taken: set[str] = set()
    return [safe_name(str(n), taken, f"output_{i}") for i, n in enumerate(names)]


def _convert_keras(
    model: Any,
    names: list[str],
    shapes: list[tuple[int | None, ...]],
    dtypes: list[Any],
    opset: int,
    out_names: list[str],
) -> onnx.ModelProto:
    tf, tf2onnx = _tf()
    specs = [tf.TensorSpec(shape, tf.as_dtype(dtype), name=n) for n, shape, dtype in zip(names, shapes, dtypes)]

    def call(*xs: Any) -> Any:
        out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        return tuple(tf.nest.flatten(out))

    function = tf.function(call, input_signature=specs)
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset)
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx cannot convert the Keras model {model.name!r}: {str(exc).strip()[:300]}"
        ) from exc
    current = input_names(proto)
    if len(current) == len(names):
        rename_values(proto, dict(zip(current, names)))
    outputs = [o.name for o in proto.graph.output]
    if len(outputs) == len(out_names):
        rename_values(proto, dict(zip(outputs, out_names)))
    return proto


def from_keras(
    model_or_path: object,
    *,
    samples: Iterable[object] | None = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> onnx.ModelProto:
    """Convert a Keras model (or a ``.keras`` / ``.h5`` file) to ONNX with tf2onnx and check it.

    The model is traced as ``model(x, training=False)`` with its outputs flattened
    (``tf.nest.flatten``: a dict's keys in sorted order). The batch axis stays dynamic when a batch of
    2 matches two batch-1 runs, else it is fixed to 1 (with a warning). The ONNX model must agree with
    Keras on ``samples`` (default: one made-up sample, uniform in [-1, 1)) within
    ``max|onnx - keras| <= atol + rtol * max|keras|``, else :class:`ConversionError`.
    """
    _tf()
    model = _load_keras(model_or_path)
    checks = list(samples) if samples is not None else None
    first = _arrays(checks[0]) if checks else None
    names, shapes, dtypes = _keras_inputs(model, first)
    example = first if first is not None else _synth(shapes, dtypes)
    example = [a.astype(d) if a.dtype != d and a.dtype.kind == np.dtype(d).kind else a for a, d in zip(example, dtypes)]
    out_names = _keras_output_names(model, example)
    fixed = [(1, *s[1:]) for s in shapes]
    proto = _convert_keras(model, names, shapes if dynamic_batch else fixed, dtypes, opset, out_names)
    note = "dynamic" if dynamic_batch else "static (dynamic_batch=False)"
    if dynamic_batch and all(s and s[0] is None for s in shapes):
        problem = batch_problem(proto, dict(zip(names, example)), rtol, atol)
        if problem is not None:
            warnings.warn(
                f"Keras model {model.name!r} does not convert with a dynamic batch ({problem}); converted with batch 1",
                stacklevel=2,
            )
            proto = _convert_keras(model, names, fixed, dtypes, opset, out_names)
            note = f"static: {problem}"
    summary = "not verified"
    if verify:
        report = verify_conversion(
            keras_reference(model), proto, checks or [example], rtol=rtol, atol=atol, reference="Keras model"
        )
        summary = f"max abs diff {report.max_abs_diff:.3g} on {report.samples} sample(s), {report.rule()}"
    tf, tf2onnx = _tf()
    set_metadata(
        proto,
        {
            "source": f"keras via tf2onnx {tf2onnx.__version__} (tensorflow {tf.__version__}): {model.name}",
            "batch": note,
            "verification": summary,
        },
    )
    return proto


def _arrays(sample: object) -> list[np.ndarray]:
    values = list(sample.values()) if isinstance(sample, dict) else sample
    return normalize_sample(values, ["?"] * (len(values) if isinstance(values, list | tuple) else 1))


# -- TFLite -----------------------------------------------------------------------------------
def _interpreter(path: Path) -> Any:
    """A TFLite interpreter: ai_edge_litert's when installed, else TensorFlow's (deprecated) one."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # optional dependency
    except ImportError:
        tf, _ = _tf()
        Interpreter = tf.lite.Interpreter
    with _quiet():
        interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def tflite_reference(path: str | os.PathLike[str], onnx_model: onnx.ModelProto) -> Any:
    """A callable arrays (ONNX input order) -> outputs (ONNX output order) that runs the .tflite file."""
    interpreter = _interpreter(Path(path))
    ins = interpreter.get_input_details()
    outs = interpreter.get_output_details()
    onnx_in = input_names(onnx_model)
    onnx_out = [o.name for o in onnx_model.graph.output]
    in_index = _match([d["name"] for d in ins], onnx_in)
    out_index = _match([d["name"] for d in outs], onnx_out)

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        for k, array in zip(in_index, arrays):
            detail = ins[k]
            if tuple(detail["shape"]) != array.shape:
                interpreter.resize_tensor_input(detail["index"], list(array.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(outs[k]["index"])) for k in out_index]

    return run


def _match(tflite_names: list[str], onnx_names: list[str]) -> list[int]:
    """For each ONNX name, the index of the TFLite tensor of that name (by position when names differ)."""
    if len(tflite_names) != len(onnx_names):
        raise ConversionError(
            f"the TFLite model has {len(tflite_names)} tensors {tflite_names} where the ONNX model has "
            f"{len(onnx_names)} {onnx_names}"
        )
    position = {n: i for i, n in enumerate(tflite_names)}
    if all(n in position for n in onnx_names):
        return [position[n] for n in onnx_names]
    stripped = {n.split(":")[0]: i for i, n in enumerate(tflite_names)}
    if all(n.split(":")[0] in stripped for n in onnx_names):
        return [stripped[n.split(":")[0]] for n in onnx_names]
    return list(range(len(onnx_names)))


def from_tflite(
    path: str | os.PathLike[str],
    *,
    samples: Iterable[object] | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> onnx.ModelProto:
    """Convert a float ``.tflite`` file to ONNX with tf2onnx and check it against the TFLite interpreter.

    Inputs keep the TFLite layout (usually NHWC) and shapes (usually a fixed batch of 1). The ONNX
    model must agree with the interpreter on ``samples`` (default: one made-up sample, uniform in
    [-1, 1)) within ``max|onnx - tflite| <= atol + rtol * max|tflite|``, else :class:`ConversionError`.
    """
    tf, tf2onnx = _tf()
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"TFLite model file {str(file)!r} does not exist")
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_tflite(str(file), opset=opset)
    except Exception as exc:
        raise ConversionError(f"tf2onnx cannot convert {file.name}: {str(exc).strip()[:300]}") from exc
    summary = "not verified"
    if verify:
        reference = tflite_reference(file, proto)
        checks = list(samples) if samples is not None else [_onnx_synth(proto)]
        report = verify_conversion(reference, proto, checks, rtol=rtol, atol=atol, reference="TFLite model")
        summary = f"max abs diff {report.max_abs_diff:.3g} on {report.samples} sample(s), {report.rule()}"
    set_metadata(
        proto,
        {
            "source": f"tflite via tf2onnx {tf2onnx.__version__} (tensorflow {tf.__version__}): {file.name}",
            "batch": "as in the TFLite model",
            "verification": summary,
        },
    )
    return proto


def _onnx_synth(model: onnx.ModelProto) -> list[np.ndarray]:

    specs = input_specs(model)
    return _synth([s.shape or () for s in specs], [s.dtype for s in specs])
