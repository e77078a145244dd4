"""Adaptive rounding (AdaRound) and empirical bias correction on a QDQ model's constant weights.

Everything is fitted from second-order statistics of each layer's inputs (per group of a grouped
convolution): ``G = sum x~ x~^T`` over its dequantized input patches. The error a rounded weight
``W~`` adds to the layer's output on those inputs, ``||(W~ - W) x~||^2``, is then
``tr((W~ - W) G (W~ - W)^T)``: an optimizer step costs one small matmul whatever the number of
samples. Scales and zero points stay exactly as onnxruntime's quantizer chose them: only the
integers (and the biases) change, so the result is a plain QDQ model.

Two targets (``QuantConfig.adaround_target``):

- ``"float"`` (AdaRound's "asymmetric" one): the float model's layer output on the float model's
  inputs, ``||W~ x~ - W x||^2``, which also needs ``C = sum x~ x^T``. It is fitted in one
  sequential sweep (``_weights._sequential``): layer k on the inputs that the already-rounded
  layers 0..k-1 give it. Fitted all at once instead, on the nearest-rounded model's inputs, every
  layer compensated errors the result no longer has; on EfficientNet-Lite0 that took top-1
  agreement from 0.50 to 0.29 (and bias correction the same way to 0.0).
- ``"layer"``: the layer's own float weights on its quantized inputs; no coupling between layers,
  so all are fitted at once from one streaming pass (flat memory), refitted ``adaround_passes`` times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from quantdebug.pipeline.calibrate import augmented
from quantdebug.runtime import make_session

GAMMA, ZETA = -0.1, 1.1  # the rectified sigmoid's stretch (Nagel et al. 2020)
REG = 0.01  # weight of the rounding regulariser against the per-position reconstruction error
WARMUP = 0.2  # share of iterations with the reconstruction term alone
INIT = "feedback"  # V's start: "feedback" (error-feedback rounding) or "fraction" (Nagel et al.)
LR = 0.05  # Adam's step on V; the exact full-data objective lets it be larger than a mini-batch one
FEEDBACK_BLOCK = 128  # columns per lazy batch of the error-feedback rounding
AIM_MIX = 0.5  # how far the float target's aim moves from W toward the least-squares W* (see float_aim)


@dataclasses.dataclass
class Target:
    """One Conv / Gemm / MatMul whose constant weight the QDQ model quantizes, in a canonical layout.

    ``weight`` is the float weight as (groups, out per group, K per group); ``q`` the quantized
    integers, ``scale``/``zero_point`` broadcastable to ``weight`` (per-tensor or per output channel).
    """

    node: str
    op_type: str
    x_name: str  # the dequantized activation input in the QDQ model
    weight: np.ndarray
    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    q_init: str  # the QDQ model's integer weight initializer
    q_dtype: np.dtype[Any]
    q_layout: Callable[[np.ndarray], np.ndarray]  # canonical (g, o, k) integers -> the initializer's shape
    float_bias: np.ndarray | None  # (out,) or None
    bias_init: str | None  # the QDQ model's bias initializer: int32 behind a DequantizeLinear, or float
    bias_scale: np.ndarray | None  # the int32 bias's scale; None for a float bias
    conv: dict[str, Any] | None = None  # kernel, strides, pads, dilations of a Conv
    G: np.ndarray | None = None
    sum_x: np.ndarray | None = None
    count: int = 0
    # the float target (sequential fit): the float model's inputs' sums, and C = sum x~ x^T
    sum_f: np.ndarray | None = None
    C: np.ndarray | None = None
    # feedback_rounding's factor of the ridged G, with the damping it was made for: it depends on G
    # and the count alone, so layers that read the same input (attention's query, key and value) share it
    factor: tuple[float, np.ndarray] | None = None

    @property
    def groups(self) -> int:
        return int(self.weight.shape[0])

    def dequantized(self, q: np.ndarray | None = None) -> np.ndarray:
        q = self.q if q is None else q
        return (q.astype(np.float64) - self.zero_point) * self.scale


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def find_targets(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, nodes: Iterable[str] | None = None
) -> tuple[list[Target], list[tuple[str, str]]]:
    """The layers adaround / bias correction can work on, and (node, reason) for those skipped."""
    init = {i.name: i for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_init = {i.name: i for i in float_model.graph.initializer}
    wanted = None if nodes is None else set(nodes)
    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    for node in qdq.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or (wanted is not None and node.name not in wanted):
            continue
        dq = producer.get(node.input[1]) if len(node.input) > 1 else None
        xdq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in init:
            skipped.append((node.name, "its weight is not a quantized constant"))
            continue
        if xdq is None or xdq.op_type != "DequantizeLinear":
            skipped.append((node.name, "its input is not quantized"))
            continue
        fnode = float_nodes.get(node.name)
        if fnode is None or len(fnode.input) < 2 or fnode.input[1] not in float_init:
            skipped.append((node.name, "no float twin with a constant weight"))
            continue
        reason = _unsupported(node)
        if reason:
            skipped.append((node.name, reason))
            continue
        targets.append(_target(node, fnode, dq, init, float_init, producer))
    # one integer initializer behind two layers cannot be rounded for both: leave it nearest
    users: dict[str, int] = {}
    for t in targets:
        users[t.q_init] = users.get(t.q_init, 0) + 1
    skipped += [(t.node, "its weight is shared with another layer") for t in targets if users[t.q_init] > 1]
    return [t for t in targets if users[t.q_init] == 1], skipped


def _unsupported(node: onnx.NodeProto) -> str:
    if node.op_type == "Gemm" and (
        _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0
    ):
        return "Gemm with transA, alpha or beta is not supported"
    if node.op_type == "Conv" and _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return "Conv with auto_pad SAME is not supported"
    return ""


def _target(
    node: onnx.NodeProto,
    fnode: onnx.NodeProto,
    dq: onnx.NodeProto,
    init: Mapping[str, onnx.TensorProto],
    float_init: Mapping[str, onnx.TensorProto],
    producer: Mapping[str, onnx.NodeProto],
) -> Target:
    w = numpy_helper.to_array(float_init[fnode.input[1]]).astype(np.float64)
    q_tensor = init[dq.input[0]]
    q = numpy_helper.to_array(q_tensor)
    scale = numpy_helper.to_array(init[dq.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(init[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 else np.zeros_like(scale)
    info = np.iinfo(q.dtype)
    conv = None
    if node.op_type == "Conv":
        group = int(_attr(node, "group", 1))
        out, kg = w.shape[0], int(np.prod(w.shape[1:]))
        shape = q.shape

        def canon(a: np.ndarray) -> np.ndarray:
            return a.reshape(group, out // group, kg)

        def layout(a: np.ndarray) -> np.ndarray:
            return a.reshape(shape)

        # per-channel scales run along axis 0 (output channels)
        col = (lambda s: s.reshape(group, out // group, 1)) if scale.size > 1 else (lambda s: s.reshape(1, 1, 1))
        spatial = w.ndim - 2
        conv = {
            "kernel": tuple(w.shape[2:]),
            "strides": tuple(_attr(node, "strides", [1] * spatial)),
            "pads": tuple(_attr(node, "pads", [0] * 2 * spatial)),
            "dilations": tuple(_attr(node, "dilations", [1] * spatial)),
            "group": group,
        }
    else:
        trans = node.op_type == "Gemm" and bool(_attr(node, "transB", 0))
        shape = q.shape

        def canon(a: np.ndarray) -> np.ndarray:
            return (a if trans else a.T)[None]

        def layout(a: np.ndarray) -> np.ndarray:
            return a[0] if trans else a[0].T

        col = (lambda s: s.reshape(1, -1, 1)) if scale.size > 1 else (lambda s: s.reshape(1, 1, 1))
    bias_init = bias_scale = float_bias = None
    if len(fnode.input) > 2 and fnode.input[2] in float_init:
        float_bias = numpy_helper.to_array(float_init[fnode.input[2]]).astype(np.float64).reshape(-1)
        bdq = producer.get(node.input[2])
        if bdq is not None and bdq.op_type == "DequantizeLinear" and bdq.input[0] in init:
            bias_init = bdq.input[0]
            bias_scale = numpy_helper.to_array(init[bdq.input[1]]).astype(np.float64).reshape(-1)
        elif node.input[2] in init and init[node.input[2]].data_type == onnx.TensorProto.FLOAT:
            bias_init = node.input[2]  # the quantizer left this bias in float
    return Target(
        node=node.name,
        op_type=node.op_type,
        x_name=node.input[0],
        weight=canon(w),
        q=canon(q),
        scale=col(scale),
        zero_point=col(zp),
        qmin=int(info.min),
        qmax=int(info.max),
        q_init=dq.input[0],
        q_dtype=q.dtype,
        q_layout=layout,
        float_bias=float_bias,
        bias_init=bias_init,
        bias_scale=bias_scale,
        conv=conv,
    )


# -- statistics -------------------------------------------------------------------------------------
def _patches(x: np.ndarray, conv: Mapping[str, Any], *, kgp: bool = False) -> np.ndarray:
    """im2col of ``x`` (N, C, *spatial): (group, positions, C/group * prod(kernel)), channel-major like the weight.

    ``kgp``: a grouped conv's patches as (K, group, positions) instead, in one copy, the layout
    ``_grouped_gram`` reads (transposing the other layout costs two more copies of every patch).
    """
    kernel, strides, pads, dil, group = conv["kernel"], conv["strides"], conv["pads"], conv["dilations"], conv["group"]
    spatial = len(kernel)
    if group == 1 and all(k == 1 for k in kernel) and not any(pads) and all(s == 1 for s in strides):
        return np.moveaxis(x, 1, -1).reshape(1, -1, x.shape[1])  # a pointwise conv: its patches are the pixels
    pad = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    x = np.pad(x, pad)
    n, c = x.shape[:2]
    # the window of a dilated kernel spans (k - 1) * d + 1 samples; take every d-th inside it
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dil))
    windows = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + spatial)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dil)
    windows = windows[index]  # (N, C, *out, *kernel)
    out = windows.shape[2 : 2 + spatial]
    if kgp:
        split = windows.reshape(n, group, c // group, *windows.shape[2:])  # (N, g, C/g, *out, *kernel)
        order = (2, *range(3 + spatial, 3 + 2 * spatial), 1, 0, *range(3, 3 + spatial))
        return split.transpose(order).reshape((c // group) * int(np.prod(kernel)), group, -1)
    order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    cols = windows.transpose(order).reshape(n * int(np.prod(out)), group, (c // group) * int(np.prod(kernel)))
    return np.ascontiguousarray(cols.transpose(1, 0, 2))


def _pointwise(target: Target) -> bool:
    conv = target.conv
    return (
        conv is not None
        and conv["group"] == 1
        and all(k == 1 for k in conv["kernel"])
        and not any(conv["pads"])
        and all(s == 1 for s in conv["strides"])
    )


def layer_inputs(target: Target, x: np.ndarray) -> np.ndarray:
    """(group, positions, K) inputs of the layer: im2col patches of a Conv, rows of a Gemm / MatMul."""
    if target.op_type == "Conv":
        assert target.conv is not None
        return _patches(x, target.conv)
    return x.reshape(1, -1, target.weight.shape[2])


def accumulate(target: Target, x: np.ndarray) -> np.ndarray | None:
    """Add one batch's G, input sums and position count to ``target``; return the patches it made of
    ``x`` (None for a pointwise conv, which needs none), which ``accumulate_float`` can reuse."""
    x = x.astype(np.float32, copy=False)
    patches = None
    if _pointwise(target):
        # (K, pixels) per sample as it lies in memory: no patch copy; BLAS reads the transpose
        xs = x.reshape(x.shape[0], x.shape[1], -1)
        g = np.stack([xi @ xi.T for xi in xs]).sum(axis=0, dtype=np.float64, keepdims=True)
        sum_x = xs.sum(axis=(0, 2), dtype=np.float64)[None]
        count = xs.shape[0] * xs.shape[2]
    elif _grouped(target):
        assert target.conv is not None
        xk = patches = _patches(x, target.conv, kgp=True)
        g = _grouped_gram(xk)
        sum_x = xk.sum(axis=2, dtype=np.float64).T
        count = xk.shape[2]
    else:
        cols = patches = layer_inputs(target, x)
        # one group: a plain 2-D product, which BLAS does in place of a batch loop
        g = (cols[0].T @ cols[0])[None].astype(np.float64)
        sum_x = cols.sum(axis=1, dtype=np.float64)
        count = cols.shape[1]
    if target.G is None:
        target.G, target.sum_x = g, sum_x
    else:
        assert target.sum_x is not None
        target.G += g
        target.sum_x += sum_x
    target.count += count
    target.factor = None  # made from the moments as they were
    return patches


def _grouped(target: Target) -> bool:
    return target.conv is not None and target.conv["group"] > 1


def _grouped_gram(xk: np.ndarray, yk: np.ndarray | None = None) -> np.ndarray:
    """G of a grouped conv (or, with ``yk``, the cross moments) from (K, group, positions) patches,
    one dot product per (group, K, K) entry.

    Many tiny BLAS calls (a depthwise conv has one per channel) cost seconds where these
    row-wise dot products cost milliseconds. Row i goes against every row j >= i (every j for the
    cross moments) in one call: the same dot product per entry as one call each, a K-th of the
    calls (a 5x5 depthwise conv made 950 per sample).
    """
    other = xk if yk is None else yk
    k, groups = xk.shape[0], xk.shape[1]
    g = np.empty((groups, k, k), np.float64)
    for i in range(k):
        first = i if yk is None else 0
        g[:, i, first:] = np.einsum("gp,jgp->gj", xk[i], other[first:])
        if yk is None:
            g[:, first:, i] = g[:, i, first:]
    return g


def accumulate_float(
    target: Target, xq: np.ndarray, xf: np.ndarray, *, cross: bool, xq_patches: np.ndarray | None = None
) -> None:
    """Add one batch of the float model's inputs ``xf`` (beside the quantized ``xq``) to ``target``:
    their sums (bias correction toward the float output) and, with ``cross``, ``C = sum x~ x^T``.

    ``xq_patches``: what ``accumulate`` returned for ``xq`` (the same patches, not made twice)."""
    xq, xf = xq.astype(np.float32, copy=False), xf.astype(np.float32, copy=False)
    c = None
    if _pointwise(target):  # as in accumulate: (K, pixels) per sample, no patch copy
        qs, fs = xq.reshape(xq.shape[0], xq.shape[1], -1), xf.reshape(xf.shape[0], xf.shape[1], -1)
        sum_f = fs.sum(axis=(0, 2), dtype=np.float64)[None]
        if cross:
            c = np.stack([qi @ fi.T for qi, fi in zip(qs, fs)]).sum(axis=0, dtype=np.float64, keepdims=True)
    elif _grouped(target):
        assert target.conv is not None
        fk = _patches(xf, target.conv, kgp=True)
        sum_f = fk.sum(axis=2, dtype=np.float64).T
        if cross:
            qk = xq_patches if xq_patches is not None else _patches(xq, target.conv, kgp=True)
            c = _grouped_gram(qk, fk)
    else:
        cf = layer_inputs(target, xf)
        sum_f = cf.sum(axis=1, dtype=np.float64)
        if cross:
            cq = xq_patches if xq_patches is not None else layer_inputs(target, xq)
            c = (cq[0].T @ cf[0])[None].astype(np.float64)
    target.sum_f = sum_f if target.sum_f is None else target.sum_f + sum_f
    if c is not None:
        target.C = c if target.C is None else target.C + c


def gather(
    qdq: onnx.ModelProto,
    targets: Sequence[Target],
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """One pass over ``feeds``: every target's G and input sums. Returns the number of samples."""
    for t in targets:
        t.G = t.sum_x = t.factor = None
        t.count = 0
    x_names = list(dict.fromkeys(t.x_name for t in targets))
    # without graph optimizations onnxruntime runs the Q/DQ ops as written: the same on every CPU
    session = make_session(augmented(qdq, x_names), what="quantized model", level="disabled")
    inputs = {i.name for i in session.get_inputs()}
    n = 0
    for feed in feeds:
        xs = dict(zip(x_names, session.run(x_names, {k: v for k, v in feed.items() if k in inputs})))
        for t in targets:
            accumulate(t, xs[t.x_name])
        n += 1
        progress(1)
    return n


def stats_key(target: Target) -> tuple[bytes, ...]:
    """What a fit depends on: equal keys give equal fits, so a later pass can keep the earlier one."""
    parts = (target.G, target.sum_x)
    return tuple(b"" if a is None else a.tobytes() for a in parts) + (str(target.count).encode(),)


# -- rounding ---------------------------------------------------------------------------------------
def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def shrunk_gram(target: Target) -> np.ndarray:
    """G / positions, shrunk toward its diagonal by K / (K + positions).

    A layer with fewer input positions than inputs (a classifier on 20 samples: 20 positions for
    1280 inputs) has a rank-deficient G, and rounding fitted to it overfits those samples (top-1
    agreement 0.22 instead of 0.50 on held-out crops); the shrinkage leaves a conv with thousands
    of positions per sample as it is.
    """
    assert target.G is not None
    k = target.G.shape[-1]
    alpha = k / (k + max(target.count, 1))
    g = target.G / max(target.count, 1)
    diag = np.einsum("gii->gi", g)
    return (1 - alpha) * g + alpha * diag[:, :, None] * np.eye(k)


def reconstruction_error(target: Target, w: np.ndarray) -> float:
    """sum ||(w - W) x||^2 over the gathered inputs (w is (group, out, K), dequantized); for the
    float target (``target.C`` gathered) sum ||w x~ - W x||^2 less its constant sum ||W x||^2."""
    assert target.G is not None
    # (d @ G) * d summed: one batched matmul, where a three-operand einsum loops over o*k*k
    if target.C is not None:
        return float(np.sum(np.matmul(w, target.G) * w) - 2 * np.sum(np.matmul(w, target.C) * target.weight))
    d = w - target.weight
    return float(np.sum(np.matmul(d, target.G) * d))


def float_aim(target: Target, damp: float = 0.01) -> np.ndarray:
    """The float weights that best reproduce the float layer's output from the quantized inputs.

    ``W* = (W C^T + l W)(G + l I)^-1``: least squares of ``||W* x~ - W x||^2``, ridge-regressed
    toward ``W`` (an input that never varies keeps its weight). ``C`` is shrunk like ``G`` (toward
    ``diag G``), so where inputs and float inputs agree ``W* = W`` exactly, and a classifier with
    fewer positions than inputs does not overfit its few samples. Rounding toward ``W*`` instead
    of ``W`` lets each layer make up for the error its quantized inputs carry; the aim goes
    ``AIM_MIX`` of the way (EfficientNet-Lite0 with bias correction: half way 0.91 top-1 agreement;
    all the way, measured before ``C`` was shrunk, 0.88; benchmarks/WEIGHT_LEVERS.md).
    """
    assert target.C is not None and target.G is not None
    gram = shrunk_gram(target)
    k, n = gram.shape[-1], max(target.count, 1)
    alpha = k / (k + n)
    diag = np.einsum("gii->gi", target.G / n)
    cross = (1 - alpha) * target.C / n + alpha * diag[:, :, None] * np.eye(k)
    ridge = damp * np.einsum("gii->gi", gram).mean(axis=1) + 1e-12
    rhs = np.einsum("gok,glk->gol", target.weight, cross) + ridge[:, None, None] * target.weight
    lhs = gram + ridge[:, None, None] * np.eye(k)
    best = np.linalg.solve(lhs, rhs.transpose(0, 2, 1)).transpose(0, 2, 1)
    return target.weight + AIM_MIX * (best - target.weight)


def _candidates(target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(floor, ceiling, free, fractional part) of every weight on the integer grid, clipped to its type."""
    ratio = target.weight / target.scale + target.zero_point
    low = np.floor(ratio)
    lo = np.clip(low, target.qmin, target.qmax)
    hi = np.clip(low + 1, target.qmin, target.qmax)
    free = lo != hi
    return lo, hi, free, np.where(free, np.clip(ratio - low, 0.0, 1.0), 0.0)


def feedback_rounding(target: Target, damp: float = 0.01, aim: np.ndarray | None = None) -> np.ndarray:
    """Round input by input, pushing each rounding error onto the inputs not yet rounded (as GPTQ,
    Frantar et al. 2022, does), but only ever to the floor or the ceiling of w / scale.

    The rounding approaches ``aim`` (default: the float weights; see ``float_aim``).

    Returns 1 where a weight rounds up, 0 where it rounds down: AdaRound's starting point.
    """
    lo, hi, free, frac = _candidates(target)
    if target.factor is None or target.factor[0] != damp:
        gram = shrunk_gram(target)
        k = gram.shape[-1]
        ridge = damp * np.einsum("gii->gi", gram).mean(axis=1) + 1e-12
        inverse = np.linalg.inv(gram + ridge[:, None, None] * np.eye(k))
        target.factor = (damp, np.linalg.cholesky(inverse).transpose(0, 2, 1))
    upper = target.factor[1]
    k = upper.shape[-1]
    scale = np.broadcast_to(target.scale, lo.shape)
    zp = np.broadcast_to(target.zero_point, lo.shape)
    work = (target.weight if aim is None else aim).copy()
    up = np.zeros(lo.shape, bool)
    # GPTQ's lazy batches: inside a block of columns the errors go on column by column; the
    # columns after it take the block's errors in one matmul (the same sums, done by BLAS). Inside
    # the block its columns lie as rows, each a contiguous (group, out) slab: the update of the
    # columns after column j then runs over contiguous memory, twice as fast as over strided rows
    # of the (group, out, K) layout, with every element's arithmetic the same
    for b0 in range(0, k, FEEDBACK_BLOCK):
        b1 = min(b0 + FEEDBACK_BLOCK, k)
        rows = np.ascontiguousarray(work[:, :, b0:b1].transpose(2, 0, 1))
        low, high = lo[:, :, b0:b1].transpose(2, 0, 1), hi[:, :, b0:b1].transpose(2, 0, 1)
        step, zero = scale[:, :, b0:b1].transpose(2, 0, 1), zp[:, :, b0:b1].transpose(2, 0, 1)
        factor = upper[:, b0:b1, b0:b1].transpose(1, 2, 0)  # (row, column, group)
        errors = np.empty(rows.shape)
        for j in range(b1 - b0):
            ratio = rows[j] / step[j] + zero[j]
            chosen = np.clip(np.round(ratio), low[j], high[j])
            up[:, :, b0 + j] = chosen > low[j]
            errors[j] = (rows[j] - (chosen - zero[j]) * step[j]) / factor[j, j][:, None]
            rows[j + 1 :] -= errors[j][None] * factor[j, j + 1 :][:, :, None]
        if b1 < k:
            # in the (group, out, block) layout the matmul has always had: BLAS sums the same way
            work[:, :, b1:] -= np.matmul(np.ascontiguousarray(errors.transpose(1, 2, 0)), upper[:, b0:b1, b1:])
    return np.where(free, up, frac >= 0.5).astype(np.float64)


def adaround(target: Target, iterations: int, seed: int, *, aim: np.ndarray | None = None) -> np.ndarray:
    """Learned integers (same layout as ``target.q``), each the floor or the ceiling of w / scale,
    reproducing the output of ``aim`` (default: the float weights; see ``float_aim``).

    Adam on V with ``h(V)`` the rectified sigmoid, the regulariser ``REG * sum(1 - |2h - 1|^beta)``
    with beta annealed from 20 to 2 after a warm-up; V starts where h equals the fractional part.
    ``seed`` only breaks exact ties of h = 0.5 at the end, so the result is deterministic. The
    loop runs in float32 (its cost is elementwise work on every weight, iteration after iteration).
    """
    assert target.G is not None
    f32 = np.float32
    lo, hi, free, frac = _candidates(target)
    if INIT == "feedback":
        # start from the error-feedback rounding, halfway into its side so Adam can still flip it
        frac = 0.25 + 0.5 * feedback_rounding(target, aim=aim)
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-6, 1 - 1e-6)
    v = np.log(p / (1 - p)).astype(f32)
    scale = np.broadcast_to(target.scale, v.shape)
    step = np.where(free, scale, 0.0).astype(f32)  # a fixed weight's h changes nothing
    gram = shrunk_gram(target)
    # grad of the error wrt w~ = base + step * h is 2 (w~ - W) G = 2 (B + (step h) G)
    aim = target.weight if aim is None else aim
    B2 = (2 * np.matmul((lo - target.zero_point) * scale - aim, gram)).astype(f32)
    G2 = (2 * gram).astype(f32)
    m = np.zeros_like(v)
    s2 = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    warm = int(WARMUP * iterations)
    stretch = f32(ZETA - GAMMA)
    for it in range(iterations):
        sig = 1.0 / (1.0 + np.exp(-v))
        h = sig * stretch + f32(GAMMA)
        inside = (h > 0) & (h < 1)
        np.clip(h, 0, 1, out=h)
        dh = np.matmul(step * h, G2)
        dh += B2
        dh *= step
        if it >= warm:
            beta = 20.0 + (2.0 - 20.0) * (it - warm) / max(iterations - warm, 1)
            t = 2 * h - 1
            # d/dh of REG * (1 - |2h - 1|^beta) is -2 REG beta |t|^(beta - 1) sign(t)
            dh -= f32(2 * REG * beta) * t * np.abs(t) ** f32(beta - 2)
        grad = dh * sig * (1 - sig) * stretch
        grad *= inside
        m *= b1
        m += f32(1 - b1) * grad
        s2 *= b2
        s2 += f32(1 - b2) * grad * grad
        rate = LR * np.sqrt(1 - b2 ** (it + 1)) / (1 - b1 ** (it + 1))
        v -= f32(rate) * m / (np.sqrt(s2) + f32(eps))
    h = _h(v.astype(np.float64))
    rng = np.random.default_rng(seed)
    ties = h == 0.5
    up = (h > 0.5) | (ties & (rng.random(h.shape) < 0.5))
    return np.where(free & up, hi, lo).astype(target.q_dtype)


def has_bias(target: Target) -> bool:
    """Whether bias correction can change this layer: a float bias, quantized or left in float."""
    return target.bias_init is not None and target.float_bias is not None


def corrected_bias(target: Target, q: np.ndarray) -> np.ndarray | None:
    """The float bias (out,) with the mean output error of the rounded weights removed.

    The layer target: the layer's own error ``(W~ - W) mean(x~)`` on its quantized inputs, so each
    layer outputs on average what its float weights would on the same inputs (see the module
    docstring). The float target (``target.sum_f`` gathered): ``W~ mean(x~) - W mean(x)``, the
    mean error against the float model's layer output, quantized inputs' error included.
    ``bias_initializer`` puts it on the QDQ model's bias scale.
    """
    if not has_bias(target):
        return None
    assert target.sum_x is not None and target.float_bias is not None
    mean_x = target.sum_x / max(target.count, 1)
    if target.sum_f is not None:
        mean_f = target.sum_f / max(target.count, 1)
        error = np.einsum("gok,gk->go", target.dequantized(q), mean_x) - np.einsum("gok,gk->go", target.weight, mean_f)
        error = error.reshape(-1)
    else:
        error = np.einsum("gok,gk->go", target.dequantized(q) - target.weight, mean_x).reshape(-1)
    return np.asarray(target.float_bias - error, np.float64)


def bias_initializer(target: Target, bias: np.ndarray) -> np.ndarray:
    """A float bias as ``target``'s bias initializer holds it: int32 on its scale, or float32."""
    if target.bias_scale is None:
        return bias.astype(np.float32)
    info = np.iinfo(np.int32)
    return np.clip(np.round(bias / target.bias_scale), info.min, info.max).astype(np.int32)


def write(qdq: onnx.ModelProto, updates: Mapping[str, np.ndarray]) -> None:
    """Replace the named integer initializers of ``qdq`` in place (same name, dtype and shape)."""
    for init in qdq.graph.initializer:
        if init.name in updates:
            init.CopyFrom(numpy_helper.from_array(updates[init.name], init.name))
