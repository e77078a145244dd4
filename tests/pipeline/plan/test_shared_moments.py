"""The float-target sweep gathers a shared input's moments once: same bytes as gathering them per layer.

Attention's query, key and value projections (and a conv's 1x1 branches) read one tensor; that tensor
lies upstream of every layer the sweep has changed since, so its moments are the same numbers.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import pytest
from tests.helpers import spy
from tests.models import _GraphBuilder, input_feed

import quantdebug as qd
from quantdebug.pipeline.plan import _adaround, _weights
from quantdebug.pipeline.prepare import _prepared


def _attention_and_branches(rng: np.random.Generator) -> onnx.ModelProto:
    """Three MatMuls on one input (q, k, v), their mix, an output MatMul; then three convs on one tensor."""
    g = _GraphBuilder(rng, "shared_inputs", 17)
    x = g.input("input", ["N", 16, 24])
    q, k, v = (g.node("MatMul", [x, g.weight(f"{p}.weight", [24, 24], 24)], p) for p in ("q", "k", "v"))
    mixed = g.node("Add", [g.node("Mul", [q, k], "qk"), v], "mix")
    out = g.node("MatMul", [mixed, g.weight("o.weight", [24, 12], 24)], "o")
    image = g.node("Reshape", [out, g.const("to_image", np.array([-1, 4, 8, 6], np.int64))], "to_image")
    convs = [
        g.conv(image, "c1", 4, 8, k=1),
        g.conv(image, "c2", 4, 8, k=1),
        g.conv(image, "c3", 4, 8, k=3),  # the same input read as 3x3 patches: other moments
    ]
    return g.build([g.node("Concat", convs, "cat", axis=1)])


@pytest.mark.parametrize(("config", "saved"), [
    # q, k, v share one gathering, c1 and c2 another; c3 (3x3 patches) and o have their own
    (qd.QuantConfig(weight_rounding="adaround"), 3),
    (qd.QuantConfig(weight_rounding="adaround", bias_correction=True, per_channel=True), 3),
    # only the nodes named are fitted: q and v follow each other in the sweep, c1 is alone
    (qd.QuantConfig(weight_rounding="adaround", adaround_iterations=20, adaround_nodes=["q", "v", "c1"]), 1),
])  # fmt: skip
def test_shared_moments_give_the_same_model(rng: np.random.Generator, monkeypatch, config, saved) -> None:
    model = _attention_and_branches(rng)
    samples = [input_feed(model, rng, batch=2) for _ in range(4)]
    calibration = qd.calibrate(model, samples, progress=False)

    def quantized() -> tuple[bytes, int]:
        gathered = spy(monkeypatch, _adaround, "accumulate")
        prepared = _prepared.PreparedModel(model)  # no fit cached
        qdq = prepared.quantize(calibration, config, prepared.precisions(config), samples)
        return qdq.SerializeToString(deterministic=True), len(gathered)

    shared, shared_calls = quantized()
    unique = itertools.count()
    monkeypatch.setattr(_weights, "_moments_key", lambda *args: next(unique))  # every layer gathers its own
    alone, alone_calls = quantized()
    assert shared == alone
    assert alone_calls - shared_calls == saved * len(samples)


def test_a_new_gathering_drops_the_old_factor(rng: np.random.Generator) -> None:
    model = _attention_and_branches(rng)
    samples = [input_feed(model, rng, batch=2) for _ in range(3)]
    calibration = qd.calibrate(model, samples, progress=False)
    prepared = _prepared.PreparedModel(model)
    qdq = prepared.quantize(calibration, qd.QuantConfig(), prepared.precisions(qd.QuantConfig()))
    target = next(t for t in _adaround.find_targets(qdq, prepared.model)[0] if t.node == "q")
    x = np.asarray(rng.standard_normal((2, 16, 24)), np.float32)
    _adaround.accumulate(target, x)
    _adaround.feedback_rounding(target)
    assert target.factor is not None
    _adaround.accumulate(target, 2 * x)
    assert target.factor is None  # the moments changed: the next rounding factors them again


def test_the_quantized_inputs_patches_are_made_once_with_the_same_moments(rng: np.random.Generator) -> None:
    """accumulate's patches of the quantized input, handed to accumulate_float, give the C it makes itself."""
    from tests.models import weight_layers

    model = weight_layers(rng)  # a 3x3 conv, a grouped and a depthwise conv, a pointwise conv, a Gemm, a MatMul
    samples = [input_feed(model, rng, batch=2) for _ in range(2)]
    calibration = qd.calibrate(model, samples, progress=False)
    prepared = _prepared.PreparedModel(model)
    qdq = prepared.quantize(calibration, qd.QuantConfig(), prepared.precisions(qd.QuantConfig()))
    targets = _adaround.find_targets(qdq, prepared.model)[0]
    assert {t.op_type for t in targets} >= {"Conv", "MatMul"} and any(t.conv and t.conv["group"] > 1 for t in targets)
    for t in targets:
        xq = rng.standard_normal(_input_shape(t)).astype(np.float32)
        xf = (xq + 0.01 * rng.standard_normal(xq.shape)).astype(np.float32)
        reused, fresh = dataclasses.replace(t), dataclasses.replace(t)
        patches = _adaround.accumulate(reused, xq)
        _adaround.accumulate_float(reused, xq, xf, cross=True, xq_patches=patches)
        _adaround.accumulate(fresh, xq)
        _adaround.accumulate_float(fresh, xq, xf, cross=True)
        assert reused.C is not None and fresh.C is not None
        np.testing.assert_array_equal(reused.C, fresh.C, err_msg=t.node)
        np.testing.assert_array_equal(reused.sum_f, fresh.sum_f, err_msg=t.node)


def _input_shape(t: _adaround.Target) -> list[int]:
    """A batch of 2 of ``t``'s input: (2, C, 8, 8) for a conv, (2, K) for a Gemm / MatMul."""
    k = t.weight.shape[0] * t.weight.shape[2]
    if t.conv is None:
        return [2, k]
    return [2, k // int(np.prod(t.conv["kernel"])), 8, 8]


@pytest.mark.parametrize(("k", "groups", "positions"), [(9, 4, 300), (25, 6, 50), (1, 3, 7)])
def test_a_grouped_convs_moments_are_one_dot_product_per_entry(rng: np.random.Generator, k, groups, positions) -> None:
    """_grouped_gram's batched rows give each (group, i, j) entry the bits of its own dot product."""
    xk = rng.standard_normal((k, groups, positions)).astype(np.float32)
    yk = rng.standard_normal((k, groups, positions)).astype(np.float32)
    for other in (None, yk):
        got = _adaround._grouped_gram(xk, other)
        right = xk if other is None else other
        for i in range(k):
            for j in range(k):
                want = np.einsum(
                    "gp,gp->g",
                    xk[min(i, j)] if other is None else xk[i],
                    right[max(i, j)] if other is None else right[j],
                )
                np.testing.assert_array_equal(got[:, i, j], want)
