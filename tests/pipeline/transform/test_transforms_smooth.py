"""SmoothQuant: scales from a numpy reference on the raw activations, the float function kept, shared
Q/K/V scales, and every site whose producer cannot absorb the scale skipped with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tests import models
from tests.helpers import dataset, session
from tests.pipeline.transform.checks import assert_same_function, const, node, weight_of

import quantdebug as qd
from quantdebug.pipeline.transform import smooth_quant

H, S = 8, 5  # hidden size, sequence length
EPS = 1e-5


def _ln_model(rng: np.random.Generator, *, heads: int = 1, producer: str = "ln", opset: int = 17) -> onnx.ModelProto:
    """input [N, S, H] -> ``producer`` -> ``heads`` MatMul(+Add bias) outputs; gamma gives channels 1, 5 outliers."""
    g = models._GraphBuilder(rng, "smooth", opset)
    x = g.input("input", ["N", S, H])
    gamma = rng.uniform(0.5, 1.5, H).astype(np.float32)
    gamma[[1, 5]] *= 40.0
    beta = rng.normal(0, 0.2, H).astype(np.float32)
    if producer == "ln":
        x = g.node(
            "LayerNormalization", [x, g.const("ln.scale", gamma), g.const("ln.bias", beta)], "ln", axis=-1, epsilon=EPS
        )
    elif producer == "decomposed":
        mean = g.node("ReduceMean", [x], "ln_mean", axes=[-1])
        d = g.node("Sub", [x, mean], "ln_sub")
        var = g.node("ReduceMean", [g.node("Mul", [d, d], "ln_sq")], "ln_var", axes=[-1])
        std = g.node(
            "Sqrt", [g.node("Add", [var, g.const("ln.eps", np.array(EPS, np.float32))], "ln_addeps")], "ln_sqrt"
        )
        n = g.node("Div", [d, std], "ln_div")
        x = g.node(
            "Add", [g.node("Mul", [n, g.const("ln.scale", gamma)], "ln_mul"), g.const("ln.bias", beta)], "ln_add"
        )
    elif producer == "matmul":
        w0 = (rng.normal(0, 0.3, (H, H)) * np.where(np.isin(np.arange(H), [1, 5]), 40.0, 1.0)).astype(np.float32)
        x = g.node(
            "Add", [g.node("MatMul", [x, g.const("fc0.weight", w0)], "fc0"), g.const("fc0.bias", beta)], "fc0_add"
        )
    elif producer == "gelu":
        x = g.node("Relu", [g.node("Mul", [x, g.const("scale", gamma)], "pre")], "act")
    outs = []
    for i in range(heads):
        w = g.weight(f"fc{i + 1}.weight", (H, 6), fan_in=H)
        outs.append(
            g.node("Add", [g.node("MatMul", [x, w], f"fc{i + 1}"), g.bias(f"fc{i + 1}.bias", 6)], f"fc{i + 1}_add")
        )
    return g.build(outs)


def _feeds(rng: np.random.Generator, n: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"input": (rng.normal(0, 2, (2, S, H)) + rng.normal(0, 1, H)).astype(np.float32)} for _ in range(n)]


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + EPS) * gamma + beta


@pytest.mark.parametrize("alpha", [0.5, 0.8])
@pytest.mark.parametrize("heads", [1, 3])
def test_layernorm_site_scales_equal_numpy_reference(heads: int, alpha: float, rng: np.random.Generator) -> None:
    model = _ln_model(rng, heads=heads)
    before = model.SerializeToString()
    feeds = _feeds(rng)
    out, records = smooth_quant(model, iter(feeds), alpha)
    assert model.SerializeToString() == before, "the input model was changed"
    matmuls = [f"fc{i + 1}" for i in range(heads)]
    assert records == [
        {"kind": "smooth_quant", "nodes": ["ln", *matmuls], "status": "applied", "reason": records[0]["reason"]}
    ]
    gamma, beta = const(model, "ln.scale"), const(model, "ln.bias")
    x = np.concatenate([_layer_norm(f["input"], gamma, beta).reshape(-1, H) for f in feeds])
    act = np.abs(x).max(axis=0)
    w_max = np.max([np.abs(weight_of(model, m)).max(axis=1) for m in matmuls], axis=0)  # Q, K, V share s
    s = act**alpha / w_max ** (1 - alpha)
    assert s.max() / s.min() > 5, "the outlier channels need larger scales"
    for m in matmuls:
        np.testing.assert_allclose(weight_of(out, m), s[:, None] * weight_of(model, m), rtol=1e-5)
    ln = node(out, "ln")
    np.testing.assert_allclose(const(out, ln.input[1]), gamma / s, rtol=1e-5)
    np.testing.assert_allclose(const(out, ln.input[2]), beta / s, rtol=1e-5)
    if alpha == 0.5:  # the paper's balance: each channel's activation and weight ranges become equal
        x_new = np.concatenate([_layer_norm(f["input"], gamma / s, beta / s).reshape(-1, H) for f in feeds])
        w_new = np.max([np.abs(weight_of(out, m)).max(axis=1) for m in matmuls], axis=0)
        np.testing.assert_allclose(np.abs(x_new).max(axis=0), w_new, rtol=1e-4)
    assert_same_function(model, out, _feeds(rng, 3))


@pytest.mark.parametrize("producer", ["decomposed", "matmul"])
def test_decomposed_layernorm_and_matmul_producers_absorb_and_keep_function(
    producer: str, rng: np.random.Generator
) -> None:
    model = _ln_model(rng, heads=2, producer=producer)
    out, records = smooth_quant(model, _feeds(rng), 0.5)
    site = next(r for r in records if "fc1" in r["nodes"])  # type: ignore[operator]
    assert site["status"] == "applied", site
    absorber = {"decomposed": ["ln_mul", "ln_add"], "matmul": ["fc0", "fc0_add"]}[producer]
    assert site["nodes"] == [*absorber, "fc1", "fc2"]
    assert len(out.graph.node) == len(model.graph.node), "SmoothQuant adds no node"
    assert_same_function(model, out, _feeds(rng, 3))


def test_unabsorbable_and_shared_inputs_are_skipped_with_reason(rng: np.random.Generator) -> None:
    relu = _ln_model(rng, producer="gelu")
    out, records = smooth_quant(relu, _feeds(rng), 0.5)
    assert records[0]["status"] == "skipped" and "Relu 'act', which cannot absorb" in str(records[0]["reason"])
    assert out.SerializeToString() == relu.SerializeToString()
    residual = _ln_model(rng)
    last = residual.graph.node[-1]
    residual.graph.node.append(onnx.helper.make_node("Add", ["ln_out", "input"], ["res"], name="residual"))
    residual.graph.output.append(onnx.helper.make_tensor_value_info("res", onnx.TensorProto.FLOAT, None))
    _, records = smooth_quant(residual, _feeds(rng), 0.5)
    assert last.name == "fc1_add" and "also feeds residual (Add)" in str(records[0]["reason"])
    with pytest.raises(qd.ConfigError, match="alpha must be a number in"):
        smooth_quant(relu, _feeds(rng), 1.5)
    with pytest.raises(qd.DatasetError, match="gave no sample"):
        smooth_quant(_ln_model(rng), [], 0.5)
    with pytest.raises(qd.ConfigError, match="did you mean 'fc1'"):
        smooth_quant(relu, _feeds(rng), 0.5, nodes=["fc11"])


def test_smoothed_model_quantizes_to_int8_with_the_users_node_names(rng: np.random.Generator) -> None:
    model = _ln_model(rng, heads=3)
    calib = _feeds(rng, 8)
    smoothed, _ = smooth_quant(model, calib, 0.5)
    qdq = qd.quantize(
        smoothed, qd.calibrate(smoothed, dataset(calib), progress=False), qd.QuantConfig(per_channel=False)
    )
    producers = {o: n.op_type for n in qdq.graph.node for o in n.output}
    for name in ("fc1", "fc2", "fc3"):
        assert [producers[i] for i in node(qdq, name).input] == ["DequantizeLinear"] * 2, f"{name} is not int8"
    want, got = session(model), session(qdq)
    for a, b in zip(want.run(None, calib[0]), got.run(None, calib[0])):
        assert np.sqrt(np.mean((a - b) ** 2)) <= 0.3 * np.sqrt(np.mean(a**2))  # int8 noise, not a broken model


def test_a_shape_reader_does_not_block_the_site(rng: np.random.Generator) -> None:
    model = _ln_model(rng)
    model.graph.node.append(onnx.helper.make_node("Shape", ["ln_out"], ["ln_shape"], name="shape"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("ln_shape", onnx.TensorProto.INT64, None))
    out, records = smooth_quant(model, _feeds(rng), 0.5)
    assert [r["status"] for r in records] == ["applied"]
    assert_same_function(model, out, _feeds(rng, 2))
