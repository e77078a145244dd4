"""Models built in code for the fix tests: each breaks int8 in a way one named lever repairs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from tests import models
from tests.helpers import session
from tests.models import _GraphBuilder, causal_mask

# the default levers before the weight levers joined them (issue 14): tests of the per-node search use
# them, since on some seeds bias correction alone repairs wide_range_node with no node out of int8
NODE_SEARCH_LEVERS = ("int16", "float", "per_channel", "calibration", "clamp")
SPIKE_INPUT = "img"
SPIKE_OUTLIER = (0, 0, 3, 5)  # where the first sample of ``mask_and_spike_feeds`` has its outlier


def mask_and_spike(rng: np.random.Generator) -> onnx.ModelProto:
    """Causal attention with a -3.4e38 mask before Softmax, beside a branch with a rare outlier.

    x[N,8,16] -> q/k/v_proj -> qk_matmul -> qk_scale -> mask_add (+ causal mask of float32 min)
    -> softmax -> av_matmul -> ``attention``. ``mask_add_out`` is calibrated ~3.4e38 wide: the
    clamp lever repairs it.

    img[N,1,64,64] (uniform in [-1, 1]) -> over (Add -2) -> over_relu -> boost (Mul 1000) ->
    spike (Add img) -> squash (Sigmoid) -> ``squashed``. boost is zero except where img > 2, which
    in ``mask_and_spike_feeds`` is one pixel of one sample: ``spike_out``'s MinMax range is then
    ~1000 wide, its step ~4, and every other pixel rounds to the zero point. Percentile
    calibration clips the one pixel (Sigmoid saturates there anyway) and repairs the branch.
    """
    g = _GraphBuilder(rng, "mask_and_spike", 17)
    dim = 16
    x = g.input("x", ["N", 8, dim])
    img = g.input(SPIKE_INPUT, ["N", 1, 64, 64])
    q = g.node("MatMul", [x, g.weight("q_proj.weight", (dim, dim), fan_in=dim)], "q_proj")
    k = g.node("MatMul", [x, g.weight("k_proj.weight", (dim, dim), fan_in=dim)], "k_proj")
    v = g.node("MatMul", [x, g.weight("v_proj.weight", (dim, dim), fan_in=dim)], "v_proj")
    kt = g.node("Transpose", [k], "k_transpose", perm=[0, 2, 1])
    s = g.node("MatMul", [q, kt], "qk_matmul")
    s = g.node("Mul", [s, g.const("qk_scale.factor", np.array(1 / np.sqrt(dim), np.float32))], "qk_scale")
    s = g.node("Add", [s, g.const("mask_add.mask", causal_mask(8))], "mask_add")
    p = g.node("Softmax", [s], "softmax", axis=-1)
    attention = g.node("MatMul", [p, v], "av_matmul", out="attention")
    over = g.node("Add", [img, g.const("over.offset", np.array(-2.0, np.float32))], "over")
    over = g.node("Relu", [over], "over_relu")
    over = g.node("Mul", [over, g.const("boost.factor", np.array(1000.0, np.float32))], "boost")
    spike = g.node("Add", [img, over], "spike")
    squashed = g.node("Sigmoid", [spike], "squash", out="squashed")
    return g.build([attention, squashed])


def mask_and_spike_feeds(rng: np.random.Generator, n: int = 8) -> list[dict[str, np.ndarray]]:
    feeds = []
    for i in range(n):
        feed = {
            "x": rng.standard_normal((1, 8, 16)).astype(np.float32),
            SPIKE_INPUT: rng.uniform(-1.0, 1.0, (1, 1, 64, 64)).astype(np.float32),
        }
        if i == 0:
            feed[SPIKE_INPUT][SPIKE_OUTLIER] = 3.0
        feeds.append(feed)
    return feeds


def badly_scaled_pair(rng: np.random.Generator) -> onnx.ModelProto:
    """conv_relu with one output channel of its first Conv 30x wider and the next Conv's input 30x narrower.

    The float function is unchanged (ReLU commutes with a positive scale); per-tensor int8 weights and
    activations lose the other channels, which is what equalization repairs.
    """
    model = models.conv_relu(rng)
    init = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    w1, w2 = (numpy_helper.to_array(init[c.input[1]]).copy() for c in convs[:2])
    w1[0] *= 30.0
    w2[:, 0] /= 30.0
    for c, w in ((convs[0], w1), (convs[1], w2)):
        init[c.input[1]].CopyFrom(numpy_helper.from_array(w, c.input[1]))
    if len(convs[0].input) > 2:
        b = numpy_helper.to_array(init[convs[0].input[2]]).copy()
        b[0] *= 30.0
        init[convs[0].input[2]].CopyFrom(numpy_helper.from_array(b, convs[0].input[2]))
    return model


def output_sqnr(float_model: onnx.ModelProto, model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> float:
    """Worst output SQNR in dB, numpy on the raw outputs of two onnxruntime sessions."""
    ref, got = session(float_model), session(model)
    r = np.concatenate([np.asarray(ref.run(None, f)[0], np.float64).reshape(-1) for f in feeds])
    g = np.concatenate([np.asarray(got.run(None, f)[0], np.float64).reshape(-1) for f in feeds])
    noise = float(np.sum((g - r) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(r**2)) / noise)
