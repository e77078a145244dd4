"""The clamp lever: tensors whose range a sentinel fill value sets (a -3.4e38 mask) are clipped to their data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from quantdebug.fix.levers._base import Changes, Lever, LeverContext
from quantdebug.pipeline.calibrate import Calibration, bin_edges
from quantdebug.runtime import make_session

SENTINEL = 1e30  # magnitudes beyond this are fill values (float32 min/max masks), not data
CLAMP_CHECK_SAMPLES = 4  # debug samples on which a clamp must leave the float model's outputs unchanged


class Clamp(Lever):
    name = "clamp"
    order = 0  # first: it repairs the ranges every other lever is measured with

    def propose(self, context: LeverContext, suspects: Sequence[str] = ()) -> Changes:
        del suspects
        feeds = context.feeds[:CLAMP_CHECK_SAMPLES]
        clamps = sentinel_clamps(context.calibration, context.tensors)
        clamps = [c for c in clamps if clamp_keeps_outputs(context.float_model, [c], feeds)]
        return {"clamps": tuple(clamps)} if clamps else {}

    def label(self, changes: Changes) -> str:
        return f"clamp: {len(changes['clamps'])} sentinel tensors"


LEVER = Clamp()


def sentinel_clamps(calibration: Calibration, tensors: Sequence[str]) -> list[tuple[str, float, float]]:
    """(tensor, low, high) for tensors whose range is set by a sentinel value such as a -3.4e38 mask."""
    edges = bin_edges()
    clamps = []
    for name in tensors:
        stats = calibration.stats.get(name)
        if stats is None or stats.count == 0:
            continue
        if max(abs(stats.minimum), abs(stats.maximum)) < SENTINEL:
            continue
        occupied = np.nonzero(stats.hist)[0]
        lows, highs = edges[occupied], edges[occupied + 1]
        normal = (np.abs(lows) < SENTINEL) & (np.abs(highs) < SENTINEL)
        if not normal.any():
            continue
        lo_n, hi_n = float(lows[normal].min()), float(highs[normal].max())
        margin = max(20.0, hi_n - lo_n)  # exp(-20) is below float32 softmax resolution
        lo = lo_n - margin if stats.minimum <= -SENTINEL else stats.minimum
        hi = hi_n + margin if stats.maximum >= SENTINEL else stats.maximum
        clamps.append((name, float(lo), float(hi)))
    return clamps


def clamp_keeps_outputs(
    float_model: onnx.ModelProto,
    clamps: Sequence[tuple[str, float, float]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    rtol: float = 1e-4,
) -> bool:
    """True when clipping the tensors in the float model leaves its outputs unchanged on ``feeds``."""
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    g = model.graph
    rename = {t: f"__qd/clamp/{i}" for i, (t, _, _) in enumerate(clamps)}
    nodes = []
    for node in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for i, out in enumerate(copy.output):
            if out in rename:
                copy.output[i] = rename[out]
        nodes.append(copy)
        for out in node.output:
            if out in rename:
                i = list(rename).index(out)
                _, lo, hi = clamps[i]
                lo_n, hi_n = f"__qd/clamp/{i}/lo", f"__qd/clamp/{i}/hi"
                g.initializer.append(helper.make_tensor(lo_n, onnx.TensorProto.FLOAT, [], [lo]))
                g.initializer.append(helper.make_tensor(hi_n, onnx.TensorProto.FLOAT, [], [hi]))
                nodes.append(helper.make_node("Clip", [rename[out], lo_n, hi_n], [out], name=f"__qd/clamp/{i}"))
    inputs = {i.name for i in g.input}
    for t, _, _ in clamps:
        if t in inputs:
            return False  # clamping a model input would change what the user feeds
    del g.node[:]
    g.node.extend(nodes)
    original = make_session(float_model, what="float model")
    clamped = make_session(model, what="clamped float model")
    for feed in feeds:
        for a, b in zip(original.run(None, dict(feed)), clamped.run(None, dict(feed))):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if not np.allclose(a64, b64, rtol=rtol, atol=rtol * (1 + float(np.max(np.abs(a64))) if a64.size else 0)):
                return False
    return True
