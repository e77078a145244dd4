"""Models built in code for the fix tests: each breaks int8 in a way one named lever repairs."""

from __future__ import annotations

import numpy as np
import onnx
from tests.models import _GraphBuilder, causal_mask

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
