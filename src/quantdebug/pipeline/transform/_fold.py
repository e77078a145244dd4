"""Fold inference-mode BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it.

onnxruntime's basic optimizations already do this for Conv when quantdebug pre-processes a model;
a model loaded without them (or a ConvTranspose/Gemm export) still has the BatchNormalization,
and cross-layer equalization needs the scale folded into the weights first.
"""

from __future__ import annotations

import numpy as np
import onnx

from quantdebug.pipeline.transform._graph import Graph, attr, set_attr


def fold_batchnorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with every foldable BatchNormalization folded into its producer's weights.

    Foldable: inference mode, constant statistics, fed by a Conv/ConvTranspose/Gemm with constant
    weight (and bias) whose output nothing else reads. The producer keeps its name and now writes
    the BatchNormalization's output. Returns the model and the folded BatchNormalization nodes'
    names; the input model is not changed.
    """
    g = Graph.of(model)
    folded: list[str] = []
    for bn in [n for n in g.graph.node if n.op_type == "BatchNormalization"]:
        if _fold_one(g, bn):
            folded.append(bn.name)
    if folded:
        g.drop_unused_initializers()
    return g.model, folded


def _fold_one(g: Graph, bn: onnx.NodeProto) -> bool:
    if attr(bn, "training_mode", 0) or any(o for o in bn.output[1:]) or len(bn.input) < 5:
        return False
    producer = g.producer.get(bn.input[0])
    stats = [g.input_const(bn, i) for i in range(1, 5)]
    if producer is None or producer.op_type not in ("Conv", "ConvTranspose", "Gemm") or any(s is None for s in stats):
        return False
    if g.only_consumer(bn.input[0]) is not bn:
        return False
    weight = g.input_const(producer, 1)
    bias = g.input_const(producer, 2) if len(producer.input) > 2 and producer.input[2] else None
    if weight is None or (len(producer.input) > 2 and producer.input[2] and bias is None):
        return False  # a weight or bias computed at run time cannot take the scale
    gamma, beta, mean, var = (np.asarray(s, np.float64).reshape(-1) for s in stats)  # type: ignore[union-attr]
    eps = float(attr(bn, "epsilon", 1e-5))  # type: ignore[arg-type]
    a = gamma / np.sqrt(var + eps)
    n_out = a.size
    w = np.asarray(weight, np.float64)
    if producer.op_type == "Gemm":
        trans_b = bool(attr(producer, "transB", 0))
        if w.ndim != 2 or w.shape[0 if trans_b else 1] != n_out:
            return False
        beta_attr = float(attr(producer, "beta", 1.0))  # type: ignore[arg-type]
        c = np.zeros(n_out) if bias is None else beta_attr * np.asarray(bias, np.float64)
        if c.size not in (1, n_out) or (c.ndim == 2 and c.shape[0] != 1):
            return False  # a per-row bias ([M, N]) has no per-channel form
        new_w = w * (a[:, None] if trans_b else a[None, :])
        new_b = (np.broadcast_to(c.reshape(-1), (n_out,)) - mean) * a + beta
        g.set_const(producer, 1, new_w, f"{producer.name}.weight")
        g.set_const(producer, 2, new_b, f"{producer.name}.bias")
        set_attr(producer, "beta", 1.0)
    else:
        groups = int(attr(producer, "group", 1))  # type: ignore[call-overload]
        if producer.op_type == "Conv":
            if w.shape[0] != n_out:
                return False
            new_w = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
        else:  # ConvTranspose: weight [C_in, C_out / group, k...], output channel = group * C_out/g + j
            per_group = w.shape[1]
            if per_group * groups != n_out or w.shape[0] % groups:
                return False
            scale = a.reshape(groups, 1, per_group, *(1,) * (w.ndim - 2))
            new_w = (w.reshape(groups, w.shape[0] // groups, *w.shape[1:]) * scale).reshape(w.shape)
        b = np.zeros(n_out) if bias is None else np.asarray(bias, np.float64).reshape(-1)
        new_b = (b - mean) * a + beta
        g.set_const(producer, 1, new_w, f"{producer.name}.weight")
        g.set_const(producer, 2, new_b, f"{producer.name}.bias")
    old_out = producer.output[0]
    producer.output[0] = bn.output[0]
    g.graph.node.remove(bn)
    g.drop_value_info([old_out])
    g.reindex()
    return True
