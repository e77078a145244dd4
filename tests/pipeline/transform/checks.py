"""Shared checks of the transform tests: same function (onnxruntime on both models), constants by name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from tests.helpers import session

RTOL = 1e-5  # the bar: outputs equal within float32 rounding, relative to the output's scale


def outputs(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    s = session(model, level="disabled")
    return [s.run(None, feed) for feed in feeds]


def assert_same_function(
    before: onnx.ModelProto, after: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], rtol: float = RTOL
) -> None:
    assert [o.name for o in before.graph.output] == [o.name for o in after.graph.output]
    for want_all, got_all in zip(outputs(before, feeds), outputs(after, feeds)):
        for name, want, got in zip([o.name for o in before.graph.output], want_all, got_all):
            scale = max(float(np.max(np.abs(want))), 1e-30)
            err = float(np.max(np.abs(got - want)))
            assert err <= rtol * scale, f"output {name}: max error {err:.3g} is {err / scale:.3g} of its scale"


def const(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).astype(np.float64)
    raise KeyError(name)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def weight_of(model: onnx.ModelProto, name: str, index: int = 1) -> np.ndarray:
    return const(model, node(model, name).input[index])
