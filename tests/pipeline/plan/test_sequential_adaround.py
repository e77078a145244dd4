"""The float target of adaptive rounding and bias correction (issue 14): one sequential sweep.

Each layer is fitted on the inputs the already-changed layers before it give it, toward the float
model's layer output on the float model's own inputs. References: the layers' inputs from
onnxruntime sessions of the finished QDQ model and of the float model, each layer re-run alone
as a one-node onnxruntime model, statistics in numpy.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tests.models import mobilenetv3_block, weight_layers
from tests.pipeline.plan.test_weight_levers import (
    LAYERS,
    _alone,
    _bias,
    _dequantized_weight,
    _inits,
    _nodes,
    _raw,
    _samples,
)

import quantdebug as qd
from quantdebug.pipeline.plan import _adaround, weight_changes
from quantdebug.pipeline.plan._segments import Segments
from quantdebug.runtime import make_session


@pytest.fixture
def case(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]], qd.Calibration]:
    model = weight_layers(rng)
    samples = _samples(model, rng)
    return model, samples, qd.calibrate(model, samples, progress=False)


def _inputs(qdq: onnx.ModelProto, model: onnx.ModelProto, samples, layers) -> tuple[list, list]:
    """Each layer's input in the QDQ model and in the float model, on every sample."""
    q_names = [_nodes(qdq)[n].input[0] for n in layers]
    f_names = [_nodes(model)[n].input[0] for n in layers]
    xq, xf = _raw(qdq, q_names, samples), _raw(model, f_names, samples)
    return [xq[n] for n in q_names], [xf[n] for n in f_names]


def test_float_target_bias_correction_zeroes_the_mean_error_against_the_float_layer(case) -> None:
    model, samples, calibration = case
    fixed = qd.quantize(model, calibration, qd.QuantConfig(bias_correction=True, adaround_target="float"))
    layers = [n for n in LAYERS if len(_nodes(model)[n].input) > 2]  # matmul1 has no bias
    float_inits = _inits(model)
    xqs, xfs = _inputs(fixed, model, samples, layers)
    for layer, xq, xf in zip(layers, xqs, xfs):
        node = _nodes(model)[layer]
        reduce = tuple(i for i in range(xq.ndim) if i != (1 if node.op_type == "Conv" else xq.ndim - 1))
        want = _alone(node, xf, float_inits[node.input[1]], float_inits[node.input[2]]).astype(np.float64)
        bias, step = _bias(fixed, layer)
        got = _alone(node, xq, _dequantized_weight(fixed, layer)[3], bias).astype(np.float64)
        error = np.mean(got - want, axis=reduce)
        # what is left is the int32 bias's own rounding (half a step) and float32 summation
        assert np.all(np.abs(error) <= 0.5 * step + 1e-5 * float(np.std(want))), (layer, error, step)
    # the layer target leaves the error its quantized inputs carry: the two differ
    layer_fixed = qd.quantize(model, calibration, qd.QuantConfig(bias_correction=True, adaround_target="layer"))
    assert _inits(layer_fixed).keys() == _inits(fixed).keys()
    assert any(_inits(layer_fixed)[k].tobytes() != v.tobytes() for k, v in _inits(fixed).items())


@pytest.mark.parametrize(("iterations", "per_channel"), [(0, False), (100, False), (0, True)])
def test_float_target_rounding_beats_nearest_on_the_final_inputs_within_one_step(
    case, iterations: int, per_channel: bool
) -> None:
    model, samples, calibration = case
    nearest = qd.quantize(model, calibration, qd.QuantConfig(per_channel=per_channel))
    config = qd.QuantConfig(weight_rounding="adaround", adaround_iterations=iterations, per_channel=per_channel)
    assert config.adaround_target == "float"  # the default
    rounded = qd.quantize(model, calibration, config)
    float_inits = _inits(model)
    # the sweep fits layer k on the inputs the rounded layers 0..k-1 give: those of the finished model
    xqs, xfs = _inputs(rounded, model, samples, LAYERS)
    changed = 0
    for layer, xq, xf in zip(LAYERS, xqs, xfs):
        node = _nodes(model)[layer]
        q0, s0, z0, w0 = _dequantized_weight(nearest, layer)
        q1, s1, z1, w1 = _dequantized_weight(rounded, layer)
        assert s1.tobytes() == s0.tobytes() and z1.tobytes() == z0.tobytes()
        assert np.max(np.abs(q1.astype(np.int32) - q0.astype(np.int32))) <= 1  # one step of nearest at most
        w = float_inits[node.input[1]]
        assert np.all(np.abs(w1 - w) < s0.astype(np.float64) * (1 + 1e-6))  # the floor or the ceiling of w/s
        b = float_inits[node.input[2]] if len(node.input) > 2 else None
        want = _alone(node, xf, w, b).astype(np.float64)  # the float layer on the float model's inputs
        err0 = float(np.sum((_alone(node, xq, w0, b) - want) ** 2))
        err1 = float(np.sum((_alone(node, xq, w1, b) - want) ** 2))
        assert err1 <= err0 * (1 + 1e-4) + 1e-9, (layer, err0, err1)
        changed += int(np.any(q1 != q0))
    assert changed > 0
    records = {r["kind"]: r for r in weight_changes(rounded)}
    assert records["adaround"]["status"] == "applied"


def test_float_target_gives_the_same_bytes_twice_and_differs_from_the_layer_target(case) -> None:
    model, samples, calibration = case
    config = qd.QuantConfig(weight_rounding="adaround", bias_correction=True, adaround_iterations=20)
    first = qd.quantize(model, calibration, config).SerializeToString(deterministic=True)
    again = qd.quantize(model, qd.calibrate(model, samples, progress=False), config, dataset=samples)
    assert again.SerializeToString(deterministic=True) == first
    other = qd.quantize(model, calibration, config.replace(adaround_target="layer"))
    assert other.SerializeToString(deterministic=True) != first  # the cache keys on the target too
    assert qd.QuantConfig.from_dict(config.to_dict()) == config


def test_segments_give_what_a_full_run_gives_with_the_weights_as_changed(rng: np.random.Generator) -> None:
    model = mobilenetv3_block(rng)  # a residual Add and an SE branch: tensors live across segments
    samples = _samples(model, rng, n=3)
    qdq = qd.quantize(model, qd.calibrate(model, samples, progress=False), qd.QuantConfig())
    convs = [n for n in qdq.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in qdq.graph.node for o in n.output}
    segments = Segments(qdq, samples)
    changed = onnx.ModelProto()
    changed.CopyFrom(qdq)
    inits = {i.name: i for i in changed.graph.initializer}
    for conv in convs:
        # what the segment run gives must be what a whole run of the model as changed so far gives
        got = segments.get(conv.input[0])
        want = _raw(changed, [conv.input[0]], samples)[conv.input[0]]
        assert np.array_equal(np.concatenate(got), want), conv.name
        # then change this conv's integer weight (as a fit would) before anything reads it
        name = producer[conv.input[1]].input[0]
        q = numpy_helper.to_array(inits[name])
        new = np.clip(q.astype(np.int32) + rng.integers(-1, 2, q.shape), -128, 127).astype(q.dtype)
        segments.set_initializer(name, new)
        inits[name].CopyFrom(numpy_helper.from_array(new, name))
    out = qdq.graph.output[0].name
    session = make_session(changed, what="changed", level="disabled")
    want_out = np.concatenate([session.run([out], s)[0] for s in samples])
    assert np.array_equal(np.concatenate(segments.get(out)), want_out)
    with pytest.raises(RuntimeError, match="after a node that reads it ran"):
        segments.set_initializer(name, new)


def test_float_target_statistics_match_numpy_on_raw_rows(case, rng: np.random.Generator, monkeypatch) -> None:
    model, _, calibration = case
    qdq = qd.quantize(model, calibration, qd.QuantConfig())
    targets, _ = _adaround.find_targets(qdq, model, ["fc", "dwconv"])
    for t in targets:
        t.G = t.sum_x = t.sum_f = t.C = None
        t.count = 0
    fc = next(t for t in targets if t.node == "fc")
    xq = rng.normal(size=(4000, 12)).astype(np.float32)
    xf = (xq + 0.1 * rng.normal(size=xq.shape)).astype(np.float32)
    _adaround.accumulate(fc, xq)
    _adaround.accumulate_float(fc, xq, xf, cross=True)
    w = fc.weight[0]  # (out, K)
    # the objective against the float layer output, less its constant, on the raw rows
    rounded = fc.dequantized()
    direct = np.sum((xq.astype(np.float64) @ rounded[0].T - xf.astype(np.float64) @ w.T) ** 2)
    constant = np.sum((xf.astype(np.float64) @ w.T) ** 2)
    direct -= constant
    # G and C are float32 products summed in float64: relative 1e-6 of the terms that cancel
    # here, not of their difference (which a seed can make 100x smaller than either)
    size = np.sum((xq.astype(np.float64) @ rounded[0].T) ** 2) + constant
    assert abs(_adaround.reconstruction_error(fc, rounded) - direct) <= 1e-6 * size
    # the aim, all the way and without ridge, is least squares of W x from x~ (up to G's shrinkage)
    monkeypatch.setattr(_adaround, "AIM_MIX", 1.0)
    best = np.linalg.lstsq(xq.astype(np.float64), xf.astype(np.float64) @ w.T, rcond=None)[0].T
    assert np.allclose(_adaround.float_aim(fc, damp=0.0)[0], best, atol=0.02 * float(np.max(np.abs(best))))
    # a depthwise conv's cross moments, group by group, against im2col in numpy
    dw = next(t for t in targets if t.node == "dwconv")
    x1 = rng.normal(size=(2, 8, 6, 6)).astype(np.float32)
    x2 = rng.normal(size=x1.shape).astype(np.float32)
    _adaround.accumulate(dw, x1)
    _adaround.accumulate_float(dw, x1, x2, cross=True)
    pads = dw.conv["pads"]
    p1 = np.pad(x1, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    p2 = np.pad(x2, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    kh, kw = dw.conv["kernel"]
    assert dw.conv["strides"] == (1, 1) and dw.conv["group"] == 8
    oh, ow = p1.shape[2] - kh + 1, p1.shape[3] - kw + 1
    for c in range(8):
        spots = [(n, i, j) for n in range(2) for i in range(oh) for j in range(ow)]
        rows1 = [p1[n, c, i : i + kh, j : j + kw].ravel() for n, i, j in spots]
        rows2 = [p2[n, c, i : i + kh, j : j + kw].ravel() for n, i, j in spots]
        a, b = np.array(rows1, np.float64), np.array(rows2, np.float64)
        assert np.allclose(dw.C[c], a.T @ b, rtol=1e-5, atol=1e-4)
        assert np.allclose(dw.G[c], a.T @ a, rtol=1e-5, atol=1e-4)
        assert np.allclose(dw.sum_f[c], b.sum(axis=0), rtol=1e-5, atol=1e-4)
