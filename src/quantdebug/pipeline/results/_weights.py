"""Weight-error statistics: each quantized weight against its original float values, in numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantdebug.support import external


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None) -> np.ndarray:
    zp = np.zeros_like(scale, dtype=np.int64) if zero_point is None else zero_point.astype(np.int64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[(1 if axis is None else axis) % q.ndim] = scale.size
        scale = scale.reshape(shape)
        zp = zp.reshape(shape)
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale.astype(np.float32)).astype(np.float32)


def weight_statistics(float_model: onnx.ModelProto, qdq: onnx.ModelProto) -> list[dict[str, Any]]:
    """One record per quantized weight: scale, errors, SQNR and the spread of per-channel ranges."""
    f_init = {i.name: i for i in float_model.graph.initializer}
    f_nodes = {n.name: n for n in float_model.graph.node}
    q_init = {i.name: i for i in qdq.graph.initializer}
    dq_of = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    out: list[dict[str, Any]] = []
    for node in qdq.graph.node:
        f_node = f_nodes.get(node.name)
        if f_node is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, tensor in enumerate(node.input):
            dq = dq_of.get(tensor)
            if dq is None or dq.input[0] not in q_init or index >= len(f_node.input):
                continue
            original = f_node.input[index]
            if original not in f_init:
                continue
            w = external.to_array(f_init[original]).astype(np.float32)
            q = external.to_array(q_init[dq.input[0]])
            scale = numpy_helper.to_array(q_init[dq.input[1]]).astype(np.float32).reshape(-1)
            zp = numpy_helper.to_array(q_init[dq.input[2]]).reshape(-1) if len(dq.input) > 2 and dq.input[2] else None
            axis = next((int(a.i) for a in dq.attribute if a.name == "axis"), None)
            if q.dtype == np.int32:  # biases are int32 with scale = input scale x weight scale
                kind = "bias"
            else:
                kind = "weight"
            deq = _dequantize(q, scale, zp, axis)
            diff = deq.astype(np.float64) - w.astype(np.float64)
            signal = float(np.sum(w.astype(np.float64) ** 2))
            noise = float(np.sum(diff**2))
            channel_axis = (1 if axis is None else axis) % w.ndim if scale.size > 1 and w.ndim else 0
            spread = math.nan
            if w.ndim >= 1 and w.shape[0] > 1 and kind == "weight":
                reduce_axes = tuple(a for a in range(w.ndim) if a != (channel_axis if scale.size > 1 else 0))
                ranges = (np.max(np.abs(w), axis=reduce_axes) if reduce_axes else np.abs(w)).astype(np.float64)
                positive = ranges[ranges > 0]
                spread = float(positive.max() / positive.min()) if positive.size else math.nan
            out.append(
                {
                    "node_name": node.name,
                    "op_name": node.op_type,
                    "tensor_name": original,
                    "kind": kind,
                    "precision": str(q.dtype),
                    "per_channel": bool(scale.size > 1),
                    "scale": float(scale[0]),
                    "num_scales": int(scale.size),
                    "max_abs_error": float(np.max(np.abs(diff))) if diff.size else 0.0,
                    "mean_squared_error": float(np.mean(diff**2)) if diff.size else 0.0,
                    "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else math.inf,
                    "channel_range_spread": spread,
                }
            )
    return out
