"""Cross-layer equalization: the float function is kept, equalized ranges match a numpy reference,
and every pair that cannot be equalized exactly is skipped with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tests.helpers import dataset, session
from tests.pipeline.transform.checks import assert_same_function, node, weight_of
from tests.random_chains import Layer, chain_model, feeds_for

import quantdebug as qd
from quantdebug.pipeline.transform import equalize, fold_batchnorm


def out_ranges(w: np.ndarray, op: str, trans_b: bool = False) -> np.ndarray:
    """Numpy reference: max |w| per output channel."""
    if op == "Conv":
        return np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    return np.abs(w).max(axis=1 if trans_b else 0)


def in_ranges(w: np.ndarray, op: str, group: int = 1, trans_b: bool = False) -> np.ndarray:
    """Numpy reference: max |w| over everything that reads input channel c (written per channel, by loops)."""
    if op != "Conv":
        return np.abs(w).max(axis=0 if trans_b else 1)
    m, cg = w.shape[:2]
    per_group = m // group
    return np.array(
        [np.abs(w[(c // cg) * per_group : (c // cg + 1) * per_group, c % cg]).max() for c in range(cg * group)]
    )


PAIRS = {
    "conv-relu-conv": ([Layer("Conv", 6, "Relu", k=3), Layer("Conv", 4, k=3)], 3),
    "grouped-conv": ([Layer("Conv", 6, "LeakyRelu", k=3, group=3), Layer("Conv", 4, "none", k=1, group=2)], 3),
    "depthwise-pointwise": ([Layer("Conv", 8, "PRelu", k=3, group=4), Layer("Conv", 5, k=1)], 4),
    "pointwise-depthwise-multiplier": ([Layer("Conv", 4, "Clip0", k=1), Layer("Conv", 8, k=3, group=4)], 3),
    "gemm-transB": ([Layer("Gemm", 7, "Relu", trans_b=True), Layer("Gemm", 3, trans_b=True)], 5),
    "gemm-matmul": ([Layer("Gemm", 7, "Relu"), Layer("MatMul", 3, bias=False)], 5),
    "matmul-add-gemm": ([Layer("MatMul", 6, "Relu"), Layer("Gemm", 2, trans_b=True)], 4),
}


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_one_pair_equalized_ranges_match_numpy_and_function_is_kept(case: str, rng: np.random.Generator) -> None:
    layers, channels = PAIRS[case]
    model = chain_model(rng, layers, channels=channels, spatial=5 if layers[0].op == "Conv" else 0)
    before = onnx.ModelProto.FromString(model.SerializeToString())
    out, records = equalize(model)
    assert model.SerializeToString() == before.SerializeToString(), "the input model was changed"
    applied = [r for r in records if r["status"] == "applied"]
    assert len(applied) == 1 and applied[0]["nodes"][0] == "l0" and applied[0]["nodes"][-1] == "l1"
    a, b = layers
    w1, w2 = weight_of(model, "l0"), weight_of(model, "l1")
    w1e, w2e = weight_of(out, "l0"), weight_of(out, "l1")
    r1, r2 = out_ranges(w1, a.op, a.trans_b), in_ranges(w2, b.op, b.group, b.trans_b)
    r1e, r2e = out_ranges(w1e, a.op, a.trans_b), in_ranges(w2e, b.op, b.group, b.trans_b)
    np.testing.assert_allclose(r1e, r2e, rtol=1e-5)  # the paper's condition after the sweep
    np.testing.assert_allclose(r1e, np.sqrt(r1 * r2), rtol=1e-5)
    s = r1 / r1e  # per-channel scale: W1 /= s and W2 *= s, nothing else
    assert not np.allclose(s, 1.0), "the weights were built with channel ranges over three decades"
    np.testing.assert_allclose(r2e, r2 * s, rtol=1e-5)
    assert_same_function(model, out, feeds_for(model, rng, 3))


CHAINS = {
    "relu6-chain": [
        Layer("Conv", 6, "Clip6", k=1, bn=True),
        Layer("Conv", 6, "Clip6", k=3, group=6),
        Layer("Conv", 4, k=1),
    ],
    "mixed-acts": [
        Layer("Conv", 5, "LeakyRelu", k=3),
        Layer("Conv", 5, "PRelu", k=3, group=5),
        Layer("Conv", 3, "Relu"),
    ],
    "dense-chain": [Layer("Gemm", 6, "Clip6", trans_b=True), Layer("MatMul", 5, "Relu"), Layer("Gemm", 3, "none")],
}


@pytest.mark.parametrize("opset", [10, 11, 13, 21])
@pytest.mark.parametrize("case", sorted(CHAINS))
def test_chain_sweeps_keep_function_across_opsets(case: str, opset: int, rng: np.random.Generator) -> None:
    layers = CHAINS[case]
    conv = layers[0].op == "Conv"
    model = chain_model(rng, layers, channels=3, spatial=6 if conv else 0, opset=opset)
    folded, bns = fold_batchnorm(model)
    out, records = equalize(folded)
    assert bns == [f"l{i}_bn" for i, layer in enumerate(layers) if layer.bn]
    pairs = [r for r in records if r["status"] == "applied"]
    assert [(r["nodes"][0], r["nodes"][-1]) for r in pairs] == [("l0", "l1"), ("l1", "l2")]
    assert_same_function(model, out, feeds_for(model, rng, 4, scale=3.0))
    assert {n.name for n in folded.graph.node} <= {n.name for n in out.graph.node}, "a user's node lost its name"
    new = {n.name for n in out.graph.node} - {n.name for n in folded.graph.node}
    assert all(name.startswith("__qd/") for name in new)
    if case == "relu6-chain":
        # a converged sweep leaves every pair's ranges equal, and 6 stays the bound of the unscaled max
        for first, second in (("l0", "l1"), ("l1", "l2")):
            w2 = weight_of(out, second)
            g2 = node(out, second).attribute
            group = next((a.i for a in g2 if a.name == "group"), 1)
            np.testing.assert_allclose(
                out_ranges(weight_of(out, first), "Conv"), in_ranges(w2, "Conv", group), rtol=1e-4
            )
        assert sum(n.op_type == "Min" for n in out.graph.node) == 2


def test_relu6_skipped_on_request_and_other_clips_skipped_with_reason(rng: np.random.Generator) -> None:
    model = chain_model(rng, CHAINS["relu6-chain"], channels=3, spatial=4)
    out, records = equalize(fold_batchnorm(model)[0], clip="skip")
    assert all(r["status"] == "skipped" for r in records)
    assert "Clip(0, 6) does not commute" in str(next(r for r in records if r["nodes"][0] == "l0")["reason"])
    assert [n.op_type for n in out.graph.node] == ["Conv", "Clip", "Conv", "Clip", "Conv"]
    with pytest.raises(qd.ConfigError, match="clip must be one of"):
        equalize(model, clip="relu")
    # Clip(-1, 1) has a negative bound no per-channel scale commutes with
    g = onnx.ModelProto.FromString(model.SerializeToString())
    for t in g.graph.initializer:
        if t.name == "l0_clip6.min":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array(-1.0, np.float32), t.name))
    _, records = equalize(fold_batchnorm(g)[0])
    assert "lower bound other than 0" in str(next(r for r in records if r["nodes"][0] == "l0")["reason"])


def test_residual_and_graph_output_pairs_are_skipped_with_reason(rng: np.random.Generator) -> None:
    layers = [Layer("Conv", 4, "Relu", k=3), Layer("Conv", 4, "Relu", k=3), Layer("Conv", 4, k=3)]
    model = chain_model(rng, layers, channels=3, spatial=4, residual=True, tap=1)
    out, records = equalize(model)
    by_first = {r["nodes"][0]: r for r in records}
    assert by_first["l0"]["status"] == "skipped" and "residual" in str(by_first["l0"]["reason"])
    assert by_first["l1"]["status"] == "skipped" and "graph output" in str(by_first["l1"]["reason"])
    assert not any(r["status"] == "applied" for r in records)
    assert_same_function(model, out, feeds_for(model, rng, 2))


def test_conv_into_matmul_and_weight_inputs_are_not_pairs(rng: np.random.Generator) -> None:
    model = chain_model(rng, [Layer("MatMul", 4, "Relu"), Layer("MatMul", 3, bias=False)], channels=3)
    g = onnx.ModelProto.FromString(model.SerializeToString())
    l1 = node(g, "l1")
    l1.input[0], l1.input[1] = l1.input[1], l1.input[0]  # weight [4, 3] @ activation is now not a pair
    _, records = equalize(g)
    assert "reads the tensor as its weight" in str(records[0]["reason"])


def test_nodes_restrict_the_pairs_and_unknown_names_are_errors(rng: np.random.Generator) -> None:
    model = chain_model(rng, CHAINS["mixed-acts"], channels=3, spatial=4)
    out, records = equalize(model, nodes=["l1", "l2"])
    assert [(r["nodes"][0], r["status"]) for r in records] == [("l1", "applied"), ("l2", "skipped")]
    np.testing.assert_array_equal(weight_of(out, "l0"), weight_of(model, "l0"))
    with pytest.raises(qd.ConfigError, match="no node named 'l7'"):
        equalize(model, nodes=["l7"])


def test_equalized_relu6_model_quantizes_to_int8_and_stays_close_to_float(rng: np.random.Generator) -> None:
    layers = CHAINS["relu6-chain"]
    model = chain_model(rng, layers, channels=3, spatial=6, decades=1.0)
    eq, _ = equalize(fold_batchnorm(model)[0])
    feeds = feeds_for(model, rng, 8)
    qdq = qd.quantize(eq, qd.calibrate(eq, dataset(feeds), progress=False), qd.QuantConfig(per_channel=False))
    producers = {o: n for n in qdq.graph.node for o in n.output}
    for conv in (n for n in qdq.graph.node if n.op_type == "Conv"):
        assert all(producers[i].op_type == "DequantizeLinear" for i in conv.input[:2]), f"{conv.name} not int8"
    # the rewrite's Min is not an onnxruntime-quantized op, but it reads and writes int8 tensors only
    readers = {i: [n.op_type for n in qdq.graph.node if i in n.input] for n in qdq.graph.node for i in n.output}
    mins = [n for n in qdq.graph.node if n.op_type == "Min"]
    assert len(mins) == 2
    for m in mins:
        assert producers[m.input[0]].op_type == "DequantizeLinear" and readers[m.output[0]] == ["QuantizeLinear"]
    assert {"l0", "l1", "l2"} <= {n.name for n in qdq.graph.node}
    want = session(model).run(None, feeds[0])[0]
    got = session(qdq).run(None, feeds[0])[0]
    assert np.sqrt(np.mean((got - want) ** 2)) <= 0.3 * np.sqrt(np.mean(want**2))  # int8 noise ~15%, broken ~100%


def test_a_weight_another_node_shares_is_copied_not_changed(rng: np.random.Generator) -> None:
    model = chain_model(rng, [Layer("Conv", 4, "Relu", k=3), Layer("Conv", 2, k=3)], channels=4, spatial=4)
    twin = onnx.helper.make_node("Conv", ["input", "l0.weight"], ["twin_out"], name="twin", pads=[1] * 4)
    model.graph.node.append(twin)
    model.graph.output.append(onnx.helper.make_tensor_value_info("twin_out", onnx.TensorProto.FLOAT, None))
    out, records = equalize(model)
    assert [r["status"] for r in records if r["nodes"][0] == "l0"] == ["applied"]
    assert node(out, "l0").input[1].startswith("__qd/") and node(out, "twin").input[1] == "l0.weight"
    np.testing.assert_array_equal(weight_of(out, "twin"), weight_of(model, "twin"))
    assert_same_function(model, out, feeds_for(model, rng, 2))
