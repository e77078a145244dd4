"""Independent references for the tests: onnxruntime with all tensors exposed, TFLite metrics, numpy Q/DQ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import ArrayLike, DTypeLike
from onnx import helper

from quantdebug.pipeline.calibrate import bin_edges

TFLITE_METRIC_NAMES = ("num_elements", "stddev", "mean_error", "max_abs_error", "mean_squared_error")


def run_all_tensors(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime (CPU, no graph optimization) with every node output exposed.

    Returns the graph inputs from ``feed`` plus every node output, by tensor name. Element types
    come from onnx shape inference; shapes are left open so a wrong inferred shape cannot fail.
    Node names play no part, but onnxruntime refuses models with duplicate node names.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    known = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    elem_types = {vi.name: vi.type.tensor_type.elem_type for vi in known if vi.type.HasField("tensor_type")}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if not name or name in present:
                continue
            elem_type = elem_types.get(name, onnx.TensorProto.UNDEFINED)
            if elem_type == onnx.TensorProto.UNDEFINED:
                raise ValueError(f"shape inference gave no tensor type for {name!r}")
            exposed.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
            present.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, dict(feed))
    result: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in feed.items()}
    result.update({n: np.asarray(v) for n, v in zip(names, values, strict=True)})
    return result


def tflite_metrics(diff_per_sample: Sequence[ArrayLike]) -> dict[str, float]:
    """TFLite QuantizationDebugger's default layer metrics: per-sample values, then ``np.nanmean``.

    Per sample, on ``diff`` as float64: ``num_elements = diff.size``, ``stddev = np.std(diff)``,
    ``mean_error = np.average(diff)``, ``max_abs_error = np.max(np.abs(diff))``,
    ``mean_squared_error = np.mean(diff**2)``.
    """
    if len(diff_per_sample) == 0:
        raise ValueError("need at least one sample")
    per_sample: dict[str, list[float]] = {name: [] for name in TFLITE_METRIC_NAMES}
    for raw in diff_per_sample:
        diff = np.asarray(raw, dtype=np.float64)
        per_sample["num_elements"].append(float(diff.size))
        per_sample["stddev"].append(float(np.std(diff)))
        per_sample["mean_error"].append(float(np.average(diff)))
        per_sample["max_abs_error"].append(float(np.max(np.abs(diff))))
        per_sample["mean_squared_error"].append(float(np.mean(diff**2)))
    return {name: float(np.nanmean(values)) for name, values in per_sample.items()}


def _per_axis(param: ArrayLike, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a scale/zero point to broadcast against an ``ndim``-D tensor (ONNX default axis 1)."""
    p = np.asarray(param)
    if p.ndim == 0 or (axis is None and p.size == 1):
        return p.reshape(())
    if p.ndim != 1:
        raise ValueError(f"per-axis parameter must be 1-D, got shape {p.shape}")
    ax = (1 if axis is None else axis) % ndim
    shape = [1] * ndim
    shape[ax] = p.size
    return p.reshape(shape)


def quantize_ref(
    x: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike,
    dtype: DTypeLike,
    axis: int | None = None,
) -> np.ndarray:
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``.

    ``x / scale`` is a float32 division as in onnxruntime; a 1-D ``scale``/``zero_point`` of
    size > 1 is per-axis along ``axis`` (default 1).
    """
    x32 = np.asarray(x, dtype=np.float32)
    s = _per_axis(np.asarray(scale, dtype=np.float32), x32.ndim, axis)
    zp = _per_axis(np.asarray(zero_point, dtype=np.int64), x32.ndim, axis)
    info = np.iinfo(np.dtype(dtype))
    with np.errstate(over="ignore", divide="ignore"):
        rounded = np.rint(np.divide(x32, s, dtype=np.float32)).astype(np.float64)
    return np.clip(rounded + zp, info.min, info.max).astype(dtype)


def dequantize_ref(
    q: ArrayLike,
    scale: ArrayLike,
    zero_point: ArrayLike | None = None,
    axis: int | None = None,
) -> np.ndarray:
    """ONNX DequantizeLinear: ``float32(q - zero_point) * scale``, per-axis like ``quantize_ref``."""
    qa = np.asarray(q)
    s = _per_axis(np.asarray(scale, dtype=np.float32), qa.ndim, axis)
    zp = _per_axis(np.asarray(0 if zero_point is None else zero_point, dtype=np.int64), qa.ndim, axis)
    return ((qa.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)


def bin_indices(values: ArrayLike) -> np.ndarray:
    """Calibration histogram bin of each float32 value (flattened), found by value among
    ``bin_edges()`` rather than by bit pattern as calibration does; -1 for NaN and Inf.

    Positive bins are ``[lo, hi)``, negative ones ``(lo, hi]``, the zero bin ``(-2**-24, 2**-24)``.
    """
    x = np.asarray(values, dtype=np.float32).reshape(-1).astype(np.float64)
    edges = bin_edges()
    finite = np.isfinite(x)
    safe = np.where(finite, x, 0.0)
    right = np.searchsorted(edges, safe, side="right") - 1
    left = np.searchsorted(edges, safe, side="left") - 1
    return np.where(finite, np.where(safe < 0, left, right), -1).astype(np.int64)
