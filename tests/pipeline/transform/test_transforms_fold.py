"""BatchNormalization folding: the folded weights equal the numpy formula, the function is kept, and a
BatchNormalization that cannot be folded exactly is left where it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests import models
from tests.pipeline.transform.checks import assert_same_function, const, node, weight_of
from tests.random_chains import Layer, chain_model, feeds_for

from quantdebug.pipeline.transform import fold_batchnorm


def _bn_model(
    rng: np.random.Generator, producer: str, *, group: int = 1, bias: bool = True, **attrs: object
) -> onnx.ModelProto:
    """``producer`` (Conv / ConvTranspose / Gemm) then BatchNormalization to the output."""
    c_in, c_out = 4, 6
    if producer == "Gemm":
        trans_b = bool(attrs.get("transB", 0))
        w = rng.normal(0, 1, (c_out, c_in) if trans_b else (c_in, c_out))
        shape: list[int | str] = ["N", c_in]
    elif producer == "Conv":
        w = rng.normal(0, 1, (c_out, c_in // group, 3, 3))
        attrs = {"pads": [1] * 4, "group": group, **attrs}
        shape = ["N", c_in, 5, 5]
    else:
        w = rng.normal(0, 1, (c_in, c_out // group, 3, 3))
        attrs = {"group": group, "strides": [2, 2], **attrs}
        shape = ["N", c_in, 4, 4]
    inits = [numpy_helper.from_array(w.astype(np.float32), "p.weight")]
    inputs = ["input", "p.weight"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(0, 1, c_out).astype(np.float32), "p.bias"))
        inputs.append("p.bias")
    stats = [rng.uniform(0.2, 3, c_out), rng.normal(0, 1, c_out), rng.normal(0, 1, c_out), rng.uniform(0.1, 4, c_out)]
    bn_in = ["p_out"] + [f"bn.{k}" for k in ("scale", "B", "mean", "var")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for v, n in zip(stats, bn_in[1:])]
    nodes = [
        helper.make_node(producer, inputs, ["p_out"], name="p", **attrs),
        helper.make_node("BatchNormalization", bn_in, ["output"], name="bn", epsilon=1e-3),
    ]
    graph = helper.make_graph(
        nodes,
        "bn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=models.IR_VERSION)


def _scale(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (const(model, f"bn.{k}") for k in ("scale", "B", "mean", "var"))
    a = gamma / np.sqrt(var + 1e-3)
    return a, beta - mean * a


@pytest.mark.parametrize("bias", [True, False])
def test_conv_fold_equals_numpy_formula(bias: bool, rng: np.random.Generator) -> None:
    model = _bn_model(rng, "Conv", group=2, bias=bias)
    before = model.SerializeToString()
    out, folded = fold_batchnorm(model)
    assert model.SerializeToString() == before, "the input model was changed"
    assert folded == ["bn"] and [n.name for n in out.graph.node] == ["p"] and node(out, "p").output[0] == "output"
    a, shift = _scale(model)
    w = const(model, "p.weight")
    np.testing.assert_allclose(weight_of(out, "p"), w * a[:, None, None, None], rtol=1e-6)
    b = const(model, "p.bias") if bias else 0.0
    np.testing.assert_allclose(weight_of(out, "p", 2), b * a + shift, rtol=1e-5, atol=1e-6)
    assert_same_function(model, out, feeds_for(model, rng, 3))


@pytest.mark.parametrize(
    ("producer", "attrs"),
    [
        ("ConvTranspose", {"group": 1}),
        ("ConvTranspose", {"group": 2}),
        ("Gemm", {"transB": 0}),
        ("Gemm", {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    ],
)
def test_convtranspose_and_gemm_folds_keep_function(
    producer: str, attrs: dict[str, object], rng: np.random.Generator
) -> None:
    model = _bn_model(rng, producer, **attrs)  # type: ignore[arg-type]
    out, folded = fold_batchnorm(model)
    assert folded == ["bn"] and not any(n.op_type == "BatchNormalization" for n in out.graph.node)
    assert_same_function(model, out, feeds_for(model, rng, 3))


def test_unfoldable_batchnorms_stay(rng: np.random.Generator) -> None:
    model = _bn_model(rng, "Conv")
    tapped = onnx.ModelProto.FromString(model.SerializeToString())
    tapped.graph.output.append(helper.make_tensor_value_info("p_out", TensorProto.FLOAT, None))
    assert fold_batchnorm(tapped)[1] == []  # the Conv's own output is a graph output
    after_relu = chain_model(rng, [Layer("Conv", 3, "Relu", k=1)], channels=2, spatial=3)
    g = after_relu.graph
    stats = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32)]
    g.initializer.extend(numpy_helper.from_array(v, f"s{i}") for i, v in enumerate(stats))
    relu_out = g.output[0].name
    g.node.append(helper.make_node("BatchNormalization", [relu_out, "s0", "s1", "s2", "s3"], ["bn_out"], name="bn"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("bn_out", TensorProto.FLOAT, None))
    out, folded = fold_batchnorm(after_relu)
    assert folded == [] and out.SerializeToString() == after_relu.SerializeToString()
