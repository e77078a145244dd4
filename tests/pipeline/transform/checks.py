"""Shared checks of the transform tests: same function (onnxruntime on both models), constants by name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tests.helpers import session

RTOL = 1e-5  # the bar: outputs equal within float32 rounding, relative to the magnitudes computed


def outputs(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    s = session(model, level="disabled")
    return [s.run(None, feed) for feed in feeds]


def assert_same_function(
    before: onnx.ModelProto, after: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], rtol: float = RTOL
) -> None:
    assert [o.name for o in before.graph.output] == [o.name for o in after.graph.output]
    for want_all, got_all, reach in zip(outputs(before, feeds), outputs(after, feeds), _reach(before, feeds)):
        for name, want, got in zip([o.name for o in before.graph.output], want_all, got_all):
            # float32 rounding is relative to the magnitudes computed on the way, not only to the
            # output's: a Clip6 output of at most 6 can come from pre-activations of 2000 (a random
            # chain hypothesis found: 8.6e-5 off after folding, 4e-8 of what it computed). And
            # however large those are, never more than 10 rtol of the output's own scale
            own = max(float(np.max(np.abs(want))), 1e-30)
            scale = max(own, reach)
            err = float(np.max(np.abs(got - want)))
            assert err <= rtol * scale, f"output {name}: max error {err:.3g} is {err / scale:.3g} of the magnitudes"
            assert err <= 10 * rtol * own, f"output {name}: max error {err:.3g} is {err / own:.3g} of its scale"


def _reach(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[float]:
    """Per feed, the largest magnitude of any float tensor the model computes (its intermediates too)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    have = {o.name for o in work.graph.output}
    names = [o for n in work.graph.node for o in n.output if o and o not in have]
    work.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    s = session(work, level="disabled")
    reach = []
    for feed in feeds:
        values = [np.asarray(v) for v in s.run(None, feed)]
        floats = [float(np.max(np.abs(v))) for v in values if v.dtype.kind == "f" and v.size]
        reach.append(max(floats, default=0.0))
    return reach


def const(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).astype(np.float64)
    raise KeyError(name)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def weight_of(model: onnx.ModelProto, name: str, index: int = 1) -> np.ndarray:
    return const(model, node(model, name).input[index])
