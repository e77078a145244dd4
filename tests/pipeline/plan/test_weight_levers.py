"""Adaptive rounding and bias correction (issue 14) against references built from raw tensors.

Layer inputs and outputs come from onnxruntime sessions (the QDQ model with graph optimizations
off, so it runs the Q/DQ ops as written); each layer is re-run alone as a one-node onnxruntime
model on those inputs, and the statistics are plain numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from tests.models import input_feed, weight_layers

import quantdebug as qd
from quantdebug.errors import ConfigError
from quantdebug.pipeline.plan import weight_changes
from quantdebug.runtime import make_session

LAYERS = ("conv1", "gconv", "dwconv", "pwconv", "fc", "matmul1")
DEPTH = len(LAYERS)  # a chain: one pass per layer fits every layer to its final inputs


def _samples(model: onnx.ModelProto, rng: np.random.Generator, n: int = 6) -> list[dict[str, np.ndarray]]:
    return [input_feed(model, rng, batch=2) for _ in range(n)]


def _nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _weight_dq(qdq: onnx.ModelProto, layer: str) -> onnx.NodeProto:
    producer = {o: n for n in qdq.graph.node for o in n.output}
    return producer[_nodes(qdq)[layer].input[1]]


def _raw(model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The named tensors on every feed, concatenated over the batch, from an unoptimized session."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {o.name for o in work.graph.output}
    work.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    session = make_session(work, what="reference", level="disabled")
    runs = [session.run(names, f) for f in feeds]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


def _alone(node: onnx.NodeProto, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``node`` run by itself in onnxruntime on input ``x`` with weight ``w`` (and bias ``b``)."""
    inits = [numpy_helper.from_array(w.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if b is not None:
        inits.append(numpy_helper.from_array(b.astype(np.float32), "b"))
        inputs.append("b")
    one = helper.make_node(node.op_type, inputs, ["y"], name="alone")
    one.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [one],
        "alone",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [helper.make_empty_tensor_value_info("y")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return make_session(model, what="one layer", level="disabled").run(None, {"x": x.astype(np.float32)})[0]


def _dequantized_weight(qdq: onnx.ModelProto, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(integers, scale, zero point, dequantized weight) of ``layer``'s weight in ``qdq``."""
    dq = _weight_dq(qdq, layer)
    inits = _inits(qdq)
    q, scale, zp = inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]]
    if scale.ndim == 1:  # per channel: along the DequantizeLinear's axis (ONNX's default is 1)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return q, scale, zp, (q.astype(np.float64) - zp.astype(np.float64)) * scale.astype(np.float64)


def _channel_axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type == "Conv" else -1


@pytest.fixture
def case(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]], qd.Calibration]:
    model = weight_layers(rng)
    samples = _samples(model, rng)
    return model, samples, qd.calibrate(model, samples, progress=False)


def _bias(qdq: onnx.ModelProto, layer: str) -> tuple[np.ndarray, float]:
    """``layer``'s bias as the QDQ model computes with it, and its step (0 for a bias left in float)."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    inits = _inits(qdq)
    name = _nodes(qdq)[layer].input[2]
    dq = producer.get(name)
    if dq is None:
        return inits[name].astype(np.float64), 0.0
    scale = inits[dq.input[1]].astype(np.float64)
    return inits[dq.input[0]].astype(np.float64) * scale, float(np.max(scale))


def test_bias_correction_zeroes_each_channels_mean_error(case) -> None:
    model, samples, calibration = case
    nearest = qd.quantize(model, calibration, qd.QuantConfig())
    fixed = qd.quantize(
        model, calibration, qd.QuantConfig(bias_correction=True, adaround_passes=DEPTH, adaround_target="layer")
    )
    layers = [n for n in LAYERS if len(_nodes(model)[n].input) > 2]  # matmul1 has no bias to correct
    float_inits = _inits(model)
    x_names = [_nodes(fixed)[n].input[0] for n in layers]
    # the layers' inputs in the corrected model: after DEPTH passes each layer was fitted to them
    xs, xs_nearest = _raw(fixed, x_names, samples), _raw(nearest, x_names, samples)
    worst_before = 0.0
    for layer, x_name in zip(layers, x_names):
        node = _nodes(model)[layer]
        w, b = float_inits[node.input[1]], float_inits[node.input[2]]
        reduce = tuple(
            i for i in range(xs[x_name].ndim) if i != (1 if node.op_type == "Conv" else -1) % xs[x_name].ndim
        )
        want = _alone(node, xs[x_name], w, b).astype(np.float64)
        bias, step = _bias(fixed, layer)
        got = _alone(node, xs[x_name], _dequantized_weight(fixed, layer)[3], bias)
        error = np.mean(got - want, axis=reduce)
        # what is left is the int32 bias's own rounding (half a step) and float32 summation
        assert np.all(np.abs(error) <= 0.5 * step + 1e-5 * float(np.std(want))), (layer, error, step)
        before = _alone(node, xs_nearest[x_name], _dequantized_weight(nearest, layer)[3], _bias(nearest, layer)[0])
        reference = _alone(node, xs_nearest[x_name], w, b)
        worst_before = max(worst_before, float(np.max(np.abs(np.mean(before - reference, axis=reduce)))))
    assert worst_before > 0.0  # nearest rounding left a mean error to remove


# the error-feedback rounding alone, then refined by Adam; per-tensor and per-channel weight scales
@pytest.mark.parametrize(("iterations", "per_channel"), [(0, False), (200, False), (0, True)])
def test_adaround_never_worse_than_nearest_and_within_one_step(case, iterations: int, per_channel: bool) -> None:
    model, samples, calibration = case
    nearest = qd.quantize(model, calibration, qd.QuantConfig(per_channel=per_channel))
    config = qd.QuantConfig(
        weight_rounding="adaround",
        adaround_iterations=iterations,
        per_channel=per_channel,
        adaround_passes=1,
        adaround_target="layer",
    )
    rounded = qd.quantize(model, calibration, config)
    float_inits = _inits(model)
    x_names = [_nodes(nearest)[n].input[0] for n in LAYERS]
    # with one pass every layer is fitted to the inputs the nearest-rounded model gives it
    xs = _raw(nearest, x_names, samples)
    changed = 0
    for layer, x_name in zip(LAYERS, x_names):
        node = _nodes(model)[layer]
        q0, s0, z0, w0 = _dequantized_weight(nearest, layer)
        q1, s1, z1, w1 = _dequantized_weight(rounded, layer)
        assert s1.tobytes() == s0.tobytes() and z1.tobytes() == z0.tobytes()  # scales and zero points kept
        assert q1.dtype == q0.dtype and q1.shape == q0.shape
        assert np.max(np.abs(q1.astype(np.int32) - q0.astype(np.int32))) <= 1  # one step of nearest at most
        w = float_inits[node.input[1]]
        assert np.all(np.abs(w1 - w) < s0.astype(np.float64) * (1 + 1e-6))  # the floor or the ceiling of w/s
        b = float_inits[node.input[2]] if len(node.input) > 2 else None
        # the error the rounding adds to the layer's output on its calibration inputs
        want = _alone(node, xs[x_name], w, b).astype(np.float64)
        err0 = float(np.sum((_alone(node, xs[x_name], w0, b) - want) ** 2))
        err1 = float(np.sum((_alone(node, xs[x_name], w1, b) - want) ** 2))
        assert err1 <= err0 * (1 + 1e-4) + 1e-9, (layer, err0, err1)
        changed += int(np.any(q1 != q0))
    assert changed > 0  # adaptive rounding changed some layer's integers


def test_same_config_calibration_and_data_give_the_same_bytes(case) -> None:
    model, samples, calibration = case
    config = qd.QuantConfig(weight_rounding="adaround", adaround_iterations=50, bias_correction=True)
    first = qd.quantize(model, calibration, config).SerializeToString(deterministic=True)
    again = qd.calibrate(model, samples, progress=False)
    second = qd.quantize(model, again, config).SerializeToString(deterministic=True)
    assert first == second
    records = qd.quantize(model, again, config)
    kinds = {r["kind"]: r for r in weight_changes(records)}
    assert set(kinds) == {"adaround", "bias_correction"}
    assert set(kinds["bias_correction"]["nodes"]) == {n for n in LAYERS if n != "matmul1"}


def test_node_lists_change_only_the_nodes_named(case) -> None:
    model, _, calibration = case
    nearest = _inits(qd.quantize(model, calibration, qd.QuantConfig()))
    only = _inits(qd.quantize(model, calibration, qd.QuantConfig(bias_correction_nodes=["gconv"])))
    changed = {name for name, value in only.items() if value.tobytes() != nearest[name].tobytes()}
    gconv = _nodes(model)["gconv"]
    assert len(changed) == 1 and next(iter(changed)).startswith(gconv.input[2])  # its bias (int32 or float)


def test_saved_calibration_needs_its_data_again(case, tmp_path) -> None:
    model, samples, calibration = case
    path = tmp_path / "calibration.json"
    calibration.save(path)
    config = qd.QuantConfig(bias_correction=True)
    with pytest.raises(ConfigError, match=r"dataset=") as info:
        qd.quantize(model, qd.Calibration.load(path), config)
    assert "bias_correction" in str(info.value)
    want = qd.quantize(model, calibration, config).SerializeToString(deterministic=True)
    loaded = qd.quantize(model, qd.Calibration.load(path, dataset=samples), config)
    passed = qd.quantize(model, qd.Calibration.load(path), config, dataset=samples)
    assert loaded.SerializeToString(deterministic=True) == want == passed.SerializeToString(deterministic=True)
    qd.quantize(model, qd.Calibration.load(path), qd.QuantConfig())  # no lever, no data needed


def test_interrupted_adaround_writes_nothing(case, tmp_path) -> None:
    model, samples, calibration = case

    def interrupted():
        yield samples[0]
        raise KeyboardInterrupt

    out = tmp_path / "model.onnx"
    with pytest.raises(KeyboardInterrupt):
        qd.quantize(
            model, calibration, qd.QuantConfig(weight_rounding="adaround"), dataset=interrupted, output_path=out
        )
    assert list(tmp_path.iterdir()) == []


def test_debugger_names_the_users_nodes_on_a_rounded_model(case) -> None:
    model, samples, _ = case
    debugger = qd.QuantizationDebugger(
        model,
        samples,
        quant_config=qd.QuantConfig(weight_rounding="adaround", adaround_iterations=50, bias_correction=True),
        debug_options=qd.DebugOptions(progress=False),
    )
    debugger.run()
    rows = {r.node_name for r in debugger.statistics().layers}
    assert set(LAYERS) <= rows
    assert weight_changes(debugger.get_nondebug_quantized_model())


def test_config_round_trip_and_validation() -> None:
    config = qd.QuantConfig(
        weight_rounding="adaround",
        adaround_nodes=["conv1"],
        adaround_iterations=10,
        adaround_samples=4,
        adaround_seed=3,
        adaround_passes=2,
        bias_correction=True,
        bias_correction_nodes=["fc"],
        equalize=True,
        equalize_nodes=["re:conv"],
        smooth_quant=0.5,
        smooth_quant_nodes=["matmul1"],
    )
    assert qd.QuantConfig.from_dict(config.to_dict()) == config
    assert qd.QuantConfig().changes_weights is False
    assert qd.QuantConfig(adaround_nodes=["conv1"]).adaround_on  # a node list turns it on
    bad = {
        "weight_rounding": "stochastic",
        "adaround_iterations": -1,
        "adaround_samples": 0,
        "adaround_passes": 0,
        "bias_correction": 1,
        "smooth_quant": 1.0,
        "adaround_nodes": "conv1",
    }
    for field, value in bad.items():
        with pytest.raises(ConfigError, match=field):
            qd.QuantConfig(**{field: value})
    with pytest.raises(ConfigError, match=r"smooth_quant=0\.5"):
        qd.QuantConfig(smooth_quant_nodes=["matmul1"])
    assert {f.name for f in dataclasses.fields(qd.QuantConfig)} >= set(config.to_dict()) - {"version"}
