"""An independent impact: every layer quantized alone (and left alone in float) in its own onnxruntime session.

Each model comes from ``qd.quantize`` (with a ``node_precision`` rule leaving the layer in float for
its removal); then only the quantization that
a layer's switches stand for is kept (the Q/DQ pair on its output and the DQ of its weights, as
``fix/_switch.py`` documents: biases and tensors no quantized layer produces stay float), every
other pair becoming an Identity. The models run unoptimized, so fake quantization runs in float
exactly as the switchable graph runs it, on any CPU; SQNR is numpy on the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import quantdebug as qd


def _strip(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, quantized_nodes: set[str], keep: set[str]
) -> onnx.ModelProto:
    """``qdq`` with only the quantization of ``keep``'s outputs and weights; other Q/DQ pairs are Identities."""
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    g = model.graph
    init = {i.name: i for i in g.initializer}
    f_init = {i.name: i for i in float_model.graph.initializer}
    f_nodes = {n.name: n for n in float_model.graph.node}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, t in enumerate(n.input):
            readers.setdefault(t, []).append((n, i))
    nodes = []
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            source = producer.get(n.input[0])
            if source is not None and source.name in keep and source.name in quantized_nodes:
                nodes.append(n)
            continue  # dropped Q nodes are read only by DQ nodes, replaced below
        if n.op_type != "DequantizeLinear":
            nodes.append(n)
            continue
        quant = producer.get(n.input[0])
        if quant is not None and quant.op_type == "QuantizeLinear":  # an activation's pair
            source = producer.get(quant.input[0])
            if source is not None and source.name in keep and source.name in quantized_nodes:
                nodes.append(n)
            else:
                nodes.append(helper.make_node("Identity", [quant.input[0]], [n.output[0]], name=n.name))
            continue
        # a weight: find its float original through the node that reads it
        users = readers.get(n.output[0], [])
        weight = init[n.input[0]]
        is_bias = weight.data_type == onnx.TensorProto.INT32
        if users and all(u.name in keep for u, _ in users) and not is_bias:
            nodes.append(n)
            continue
        user, index = users[0]
        original = f_init[f_nodes[user.name].input[index]]
        name = f"__ref/{n.output[0]}"
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(original), name))
        nodes.append(helper.make_node("Identity", [name], [n.output[0]], name=n.name))
    del g.node[:]
    g.node.extend(nodes)
    return model


def _outputs(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # the stripped models leave unused quantization parameters behind
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [session.run(None, dict(f)) for f in feeds]
    return [np.concatenate([np.asarray(r[i], np.float64).reshape(-1) for r in runs]) for i in range(len(runs[0]))]


def _noise_power(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Noise over signal power of the worst output (the models here have one output)."""
    (r,), (q,) = reference, got
    noise = float(np.sum((q - r) ** 2))
    return np.inf if not np.isfinite(noise) else noise / float(np.sum(r**2))


def independent_impacts(
    model: onnx.ModelProto,
    calibration: qd.Calibration,
    float_model: onnx.ModelProto,
    layers: Sequence[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
) -> dict[str, float]:
    """Per layer: the larger of the share of the all-quantized noise it makes alone and the share that
    leaving it alone in float removes, each from its own quantized model.

    ``float_model``: the pre-processed float model the quantized models were made from (for the
    float weights); ``layers``: the quantized layers' node names.
    """
    quantized = set(layers)
    full = qd.quantize(model, calibration, qd.QuantConfig())
    reference = _outputs(_strip(full, float_model, quantized, set()), feeds)
    total = _noise_power(reference, _outputs(_strip(full, float_model, quantized, quantized), feeds))
    out = {}
    for node in layers:
        # alone: from the full model, since onnxruntime's quantizer leaves a data-movement op (Reshape,
        # Transpose) whose input is float unquantized, while the switch quantizes it as the full model does
        alone = _noise_power(reference, _outputs(_strip(full, float_model, quantized, {node}), feeds))
        rest_model = qd.quantize(model, calibration, qd.QuantConfig(node_precision=[(node, "float")]))
        rest = _noise_power(reference, _outputs(_strip(rest_model, float_model, quantized, quantized - {node}), feeds))
        if np.isinf(total):
            out[node] = 1.0 if np.isinf(alone) or np.isfinite(rest) else 0.0
        else:
            out[node] = float(min(1.0, max(0.0, 1.0 - rest / total, alone / total)))
    return out
