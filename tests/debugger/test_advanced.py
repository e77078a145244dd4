"""Advanced usages: custom metrics, model metrics, whole-model verify, calibrate once, external QDQ, int16."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from tests import models
from tests.helpers import assert_metrics_close, dataset, reference_pairs, reference_statistics, session
from tests.reference import dequantize_ref

import quantdebug as qd


def _feeds(model: onnx.ModelProto, rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    return [models.input_feed(model, rng) for _ in range(n)]


def _correlation(f: np.ndarray, q: np.ndarray, s: float, zp: int) -> float:
    return float(np.corrcoef(f.flatten(), (q.flatten() - zp) * s)[0, 1])


def test_custom_layer_and_direct_compare_metrics_match_numpy(rng: np.random.Generator) -> None:
    model = models.all_ops(rng)
    feeds = _feeds(model, rng, 5)
    options = qd.DebugOptions(
        layer_debug_metrics={"mean_abs_error": lambda diff: np.mean(np.abs(diff))},
        layer_direct_compare_metrics={"correlation": _correlation, "int_max": lambda f, q, s, zp: float(q.max())},
    )
    debugger = qd.QuantizationDebugger(model, dataset(feeds), debug_options=options)
    debugger.run()
    pairs = reference_pairs(debugger, feeds)
    for tensor, samples in pairs.items():
        got = debugger.layer_statistics[tensor]
        mae = np.nanmean([np.mean(np.abs(p["quantized"] - p["float"])) for p in samples])
        corr = np.nanmean([_correlation(p["float"], p["int"], p["scale"], p["zp"]) for p in samples])
        int_max = np.mean([float(np.max(p["int"])) for p in samples])
        # the twins in the debug model run with onnxruntime's fusions (Conv+Relu), the reference twins
        # without: float32 reassociation moves the differences by ~1e-5 relative
        assert got["mean_abs_error"] == pytest.approx(mae, rel=2e-4, abs=1e-9), tensor
        if not np.isnan(corr):
            assert got["correlation"] == pytest.approx(corr, rel=2e-4, abs=1e-7), tensor
        assert got["int_max"] == int_max, tensor
    header = debugger.layer_statistics_csv().splitlines()[0].split(",")
    assert header[6:10] == ["mean_squared_error", "mean_abs_error", "correlation", "int_max"]
    assert header[10] == "scale"


def test_integers_passed_to_direct_compare_are_int32_deployed_values(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = _feeds(model, rng, 2)
    seen: list[tuple[np.dtype, int, int]] = []

    def record(f: np.ndarray, q: np.ndarray, s: float, zp: int) -> float:
        seen.append((q.dtype, int(q.min()), int(q.max())))
        return 0.0

    options = qd.DebugOptions(layer_direct_compare_metrics={"record": record})
    debugger = qd.QuantizationDebugger(model, dataset(feeds), debug_options=options)
    debugger.run()
    assert seen and all(dtype == np.int32 and -128 <= lo <= hi <= 127 for dtype, lo, hi in seen)


def test_model_metrics_match_direct_comparison(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = _feeds(model, rng, 6)
    options = qd.DebugOptions(
        model_debug_metrics={
            "argmax_accuracy": lambda f, q: float(np.mean(np.argmax(f[0]) == np.argmax(q[0]))),
            "max_abs": lambda f, q: float(np.max(np.abs(f[0] - q[0]))),
        }
    )
    debugger = qd.QuantizationDebugger(model, dataset(feeds), debug_options=options)
    debugger.run()
    float_session = session(model)
    quant_session = session(debugger.get_nondebug_quantized_model())
    accuracy, peak = [], []
    for feed in feeds:
        (f,) = float_session.run(None, feed)
        (q,) = quant_session.run(None, feed)
        accuracy.append(float(np.argmax(f) == np.argmax(q)))
        peak.append(float(np.max(np.abs(f - q))))
    assert debugger.model_statistics["argmax_accuracy"] == pytest.approx(np.mean(accuracy))
    assert debugger.model_statistics["max_abs"] == pytest.approx(np.mean(peak), rel=1e-5)


def test_metric_names_must_be_unique() -> None:
    with pytest.raises(qd.ConfigError, match="used in both"):
        qd.DebugOptions(layer_debug_metrics={"x": np.mean}, model_debug_metrics={"x": lambda f, q: 0.0})
    with pytest.raises(qd.ConfigError, match="used in both"):
        qd.DebugOptions(layer_debug_metrics={"stddev": np.std})


@pytest.mark.parametrize("name", ["conv_relu", "mobilenetv3_block", "all_ops", "multi_io"])
def test_whole_model_verify_matches_separate_runs(name: str, rng: np.random.Generator) -> None:
    model = models.ALL_MODELS[name](rng)
    feeds = _feeds(model, rng, 4)
    debugger = qd.QuantizationDebugger(model, dataset(feeds), debug_options=qd.DebugOptions(verify_mode="whole_model"))
    debugger.run()
    reference = reference_statistics(debugger, feeds)
    assert list(reference) == list(debugger.layer_statistics)
    for tensor, want in reference.items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, f"{name}/{tensor}")
    per_layer = qd.QuantizationDebugger(model, dataset(feeds), calibration=debugger.calibration)
    per_layer.run()
    last = list(reference)[-1]
    # error accumulates: the last layer's whole-model error is at least its per-layer error, typically more
    assert (
        debugger.layer_statistics[last]["mean_squared_error"]
        >= 0.5 * per_layer.layer_statistics[last]["mean_squared_error"]
    )


def test_calibrate_once_quantize_many(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.all_ops(rng)
    feeds = _feeds(model, rng, 6)
    calibration = qd.calibrate(model, dataset(feeds))
    path = tmp_path / "cal.json"
    calibration.save(path)
    loaded = qd.Calibration.load(path)
    assert loaded.ranges(qd.QuantConfig()) == calibration.ranges(qd.QuantConfig())
    debugger = qd.QuantizationDebugger(model, dataset(feeds), calibration=loaded)
    node = debugger.layer_names[2]
    debugger.options = qd.DebugOptions(denylisted_nodes=[node])
    a = debugger.get_nondebug_quantized_model()
    b = qd.quantize(model, loaded, denylisted_nodes=[node])
    feed = models.input_feed(model, rng, batch=2)
    np.testing.assert_array_equal(session(a).run(None, feed)[0], session(b).run(None, feed)[0])
    assert node in {n.name for n in b.graph.node}
    half = qd.calibrate(model, dataset(feeds[:3])).merge(qd.calibrate(model, dataset(feeds[3:])))
    assert half.ranges(qd.QuantConfig()) == calibration.ranges(qd.QuantConfig())
    assert half.num_samples == 6


def test_calibration_of_another_model_is_rejected(rng: np.random.Generator) -> None:
    a = models.conv_relu(rng)
    b = models.conv_relu(rng)  # same graph, other weights
    calibration = qd.calibrate(a, dataset(_feeds(a, rng, 2)))
    with pytest.raises(qd.CalibrationError, match="another model"):
        qd.quantize(b, calibration)
    with pytest.raises(qd.CalibrationError, match="another model"):
        qd.QuantizationDebugger(b, dataset(_feeds(b, rng, 2)), calibration=calibration)


def _with_attribute(model: onnx.ModelProto, op_type: str, name: str, value: object) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    node = next(n for n in changed.graph.node if n.op_type == op_type)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, onnx.helper.make_attribute(name, value)])
    return changed


def test_calibration_of_a_model_changed_only_in_an_attribute_is_rejected(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    calibration = qd.calibrate(model, dataset(_feeds(model, rng, 2)))
    # same names, inputs, outputs and weights; the Conv's strides differ, and so do its outputs
    changed = _with_attribute(model, "Conv", "strides", [2, 2])
    feed = models.input_feed(model, rng)
    assert not np.allclose(session(changed).run(None, feed)[0], session(model).run(None, feed)[0])
    with pytest.raises(qd.CalibrationError, match="another model"):
        qd.quantize(changed, calibration)


def test_a_calibration_saved_by_the_previous_release_is_still_accepted(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    """Format 1 files carry the fingerprint that ignored attributes: accepted with a warning, checked as far
    as that fingerprint goes (weights, structure), and never mistaken for a newer kind."""
    from quantdebug.pipeline.calibrate import model_fingerprint

    model = models.conv_relu(rng)
    calibration = qd.calibrate(model, dataset(_feeds(model, rng, 2)))
    data = calibration.to_dict()
    assert data["version"] == 2 and data["fingerprint"] == model_fingerprint(model)
    old = {k: v for k, v in data.items() if k != "fingerprint_version"}
    old.update(version=1, fingerprint=model_fingerprint(model, version=1))
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    loaded = qd.Calibration.load(path)
    with pytest.warns(UserWarning, match="earlier quantdebug"):
        quantized = qd.quantize(model, loaded)
    feed = models.input_feed(model, rng)
    want = session(qd.quantize(model, calibration)).run(None, feed)[0]
    np.testing.assert_array_equal(session(quantized).run(None, feed)[0], want)
    with pytest.raises(qd.CalibrationError, match="another model"):
        qd.quantize(models.conv_relu(rng), loaded)  # other weights: the old fingerprint sees that
    assert model_fingerprint(model, version=1) != model_fingerprint(model)


def test_truncated_calibration_file_is_a_clear_error(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.conv_relu(rng)
    path = tmp_path / "cal.json"
    qd.calibrate(model, dataset(_feeds(model, rng, 2))).save(path)
    path.write_text(path.read_text()[:100])
    with pytest.raises(qd.CalibrationError, match="not valid JSON"):
        qd.Calibration.load(path)


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


@pytest.mark.parametrize("mode", ["per_layer", "whole_model"])
def test_debug_a_model_quantized_by_onnxruntime(mode: str, rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.mobilenetv3_block(rng)
    feeds = _feeds(model, rng, 4)
    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ)
    debugger = qd.QuantizationDebugger(
        str(src),
        quantized_model=str(dst),
        debug_dataset=dataset(feeds),
        debug_options=qd.DebugOptions(verify_mode=mode),
    )
    debugger.run()
    assert len(debugger.layer_statistics) >= 8
    for tensor, want in reference_statistics(debugger, feeds).items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)
    assert debugger.fidelity == 0.0
    with pytest.raises(qd.ConfigError, match="quantized elsewhere"):
        debugger.options = qd.DebugOptions(denylisted_nodes=[debugger.layer_names[0]])


def _hand_written_qdq(rng: np.random.Generator) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    fnodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 8, 8])
    float_model = helper.make_model(
        helper.make_graph(fnodes, "f", [x], [z], [numpy_helper.from_array(w, "w")]),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,
    )
    ws = np.abs(w).reshape(4, -1).max(axis=1) / 127.0
    wq = np.clip(np.rint(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(wq, "w_q"),
        numpy_helper.from_array(ws.astype(np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.03, np.float32), "x_s"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "z_s"),
        numpy_helper.from_array(np.array(-128, np.int8), "z_zp"),
    ]
    qnodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"], name="dq_w", axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["z_f"], name="relu"),
        helper.make_node("QuantizeLinear", ["z_f", "z_s", "z_zp"], ["z_q"], name="q_z"),
        helper.make_node("DequantizeLinear", ["z_q", "z_s", "z_zp"], ["z"], name="dq_z"),
    ]
    quantized = helper.make_model(
        helper.make_graph(qnodes, "q", [x], [z], inits), opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    )
    return float_model, quantized


def test_debug_a_hand_written_qdq_model(rng: np.random.Generator) -> None:
    float_model, quantized = _hand_written_qdq(rng)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    debugger = qd.QuantizationDebugger(float_model, quantized_model=quantized, debug_dataset=dataset(feeds))
    debugger.run()
    assert list(debugger.layer_statistics) == ["z"]
    row = debugger.layer_rows[0]
    assert (row.scale, row.zero_point, row.node_name) == (pytest.approx(0.05), -128, "conv")
    # independent: numpy quantization of the float model's own output
    diffs = []
    for feed in feeds:
        x_dq = dequantize_ref(np.clip(np.rint(feed["x"] / np.float32(0.03)), -128, 127).astype(np.int8), 0.03, 0)
        (twin,) = session(float_model).run(None, {"x": x_dq})
        (deployed,) = session(quantized).run(None, feed)
        diffs.append(deployed.astype(np.float64) - twin.astype(np.float64))
    want = np.nanmean([np.mean(d**2) for d in diffs])
    assert debugger.layer_statistics["z"]["mean_squared_error"] == pytest.approx(want, rel=1e-3)


def test_not_a_qdq_model_is_refused(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    with pytest.raises(qd.ModelError, match="QDQ"):
        qd.QuantizationDebugger(model, quantized_model=model, debug_dataset=dataset(_feeds(model, rng, 1)))


def test_int16_activations_globally_and_per_node(rng: np.random.Generator) -> None:
    model = models.all_ops(rng)
    feeds = _feeds(model, rng, 3)
    wide = qd.QuantizationDebugger(model, dataset(feeds), quant_config=qd.QuantConfig(activation_type="int16"))
    wide.run()
    assert {r.precision for r in wide.layer_rows} == {"int16"}
    assert all(r.qmax - r.qmin == 65535 for r in wide.layer_rows)
    for tensor, want in reference_statistics(wide, feeds).items():
        assert_metrics_close(wide.layer_statistics[tensor], want, tensor)
    mixed_config = qd.QuantConfig(node_precision=[("se_scale", "int16"), ("re:^conv_", "int16"), ("conv_b", "int8")])
    mixed = qd.QuantizationDebugger(model, dataset(feeds), calibration=wide.calibration, quant_config=mixed_config)
    mixed.run()
    precision = {r.node_name: r.precision for r in mixed.layer_rows}
    assert precision["se_scale"] == "int16"
    assert precision["conv_a"] == "int16"
    assert mixed.precisions()["conv_b"] == "int8", "a later rule overrides an earlier one"
    assert mixed.precisions()["conv_a"] == "int16"
    assert precision["add"] == "int8"
    for tensor, want in reference_statistics(mixed, feeds).items():
        assert_metrics_close(mixed.layer_statistics[tensor], want, tensor)
    quantized = mixed.get_nondebug_quantized_model()
    assert any(i.version >= 21 for i in quantized.opset_import if i.domain in ("", "ai.onnx"))
    feed = models.input_feed(model, rng, batch=2)
    outputs = session(quantized).run(None, feed)
    assert all(np.isfinite(o).all() for o in outputs)
    # 16-bit activations cut the activations' share of the output error. Measured on the samples
    # the ranges came from (a fresh sample can fall outside them, and clipping costs 8 and 16 bits
    # the same), with 16-bit weights on both sides (8-bit weights' error can hide the activations')
    reference = [session(model).run(None, f)[0] for f in feeds]

    def error(activation_type: str) -> float:
        config = qd.QuantConfig(activation_type=activation_type, weight_type="int16")
        run = session(qd.quantize(model, wide.calibration, config))
        return float(np.mean([np.mean((run.run(None, f)[0] - r) ** 2) for f, r in zip(feeds, reference)]))

    assert error("int16") < 0.01 * error("int8")


def test_weight_statistics_match_numpy(rng: np.random.Generator) -> None:
    model = models.depthwise(rng)
    debugger = qd.QuantizationDebugger(
        model, dataset(_feeds(model, rng, 2)), quant_config=qd.QuantConfig(per_channel=True)
    )
    records = debugger.weight_statistics()
    weights = {i.name: numpy_helper.to_array(i) for i in debugger.float_model.graph.initializer}
    quantized = debugger.get_nondebug_quantized_model()
    q_init = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    conv_weights = [r for r in records if r["kind"] == "weight" and r["op_name"] == "Conv"]
    assert conv_weights and all(r["per_channel"] for r in conv_weights)
    for r in conv_weights:
        w = weights[r["tensor_name"]]
        dq = next(
            n
            for n in quantized.graph.node
            if n.op_type == "DequantizeLinear"
            and n.input[0] in q_init
            and q_init[n.input[0]].shape == w.shape
            and np.array_equal(q_init[n.input[1]].reshape(-1)[:1], np.array([r["scale"]], np.float32))
        )
        deq = dequantize_ref(q_init[dq.input[0]], q_init[dq.input[1]], q_init[dq.input[2]], axis=0)
        err = deq.astype(np.float64) - w
        assert r["max_abs_error"] == pytest.approx(np.max(np.abs(err)), rel=1e-6)
        sqnr = 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum(err**2))
        assert r["sqnr_db"] == pytest.approx(sqnr, rel=1e-6)
        ranges = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        assert r["channel_range_spread"] == pytest.approx(ranges.max() / ranges.min())


def test_layer_tensors_drill_down(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = _feeds(model, rng, 3)
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    pairs = reference_pairs(debugger, feeds)
    name = debugger.layer_rows[1].tensor_name if debugger._rows else list(pairs)[1]
    got = debugger.layer_tensors(name, sample_index=2)
    want = pairs[name][2]
    np.testing.assert_allclose(got["float"], want["float"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["quantized"], want["quantized"])
    np.testing.assert_allclose(got["diff"], got["quantized"] - got["float"])
    with pytest.raises(qd.ConfigError, match="past the end"):
        debugger.layer_tensors(name, sample_index=10)
    with pytest.raises(qd.ConfigError, match="no verified layer"):
        debugger.layer_tensors("nope")


def test_progress_bar_only_when_asked(rng: np.random.Generator, capsys: pytest.CaptureFixture[str]) -> None:
    model = models.conv_relu(rng)
    feeds = _feeds(model, rng, 3)
    quiet = qd.QuantizationDebugger(model, dataset(feeds))
    quiet.run()
    assert capsys.readouterr().err == ""
    loud = qd.QuantizationDebugger(model, dataset(feeds), debug_options=qd.DebugOptions(progress=True))
    loud.run()
    err = capsys.readouterr().err
    assert "debugging" in err and "sample" in err


def test_csv_round_trip_through_pandas(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.conv_relu(rng)
    debugger = qd.QuantizationDebugger(model, dataset(_feeds(model, rng, 2)))
    debugger.run()
    path = tmp_path / "stats.csv"
    with open(path, "w") as f:
        debugger.layer_statistics_dump(f)
    import pandas as pd

    frame = pd.read_csv(path)
    assert list(frame["tensor_name"]) == list(debugger.layer_statistics)
    assert next(iter(csv.reader(io.StringIO(path.read_text()))))[-2:] == ["node_name", "impact"]


def test_histograms_of_worst_tensors_match_numpy(rng: np.random.Generator) -> None:
    model = models.all_ops(rng)
    feeds = _feeds(model, rng, 5)
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    debugger.run()
    stats = debugger.statistics(histograms=3)
    hists = stats.extras["histograms"]
    worst = sorted(debugger.layer_rows, key=lambda r: -r.rmse_over_scale)[:3]
    assert list(hists) == [r.tensor_name for r in worst]
    pairs = reference_pairs(debugger, feeds[:4])
    for name, h in hists.items():
        edges = np.asarray(h["edges"])
        f = np.concatenate([np.asarray(p["float"]).reshape(-1) for p in pairs[name]])
        q = np.concatenate([np.asarray(p["quantized"]).reshape(-1) for p in pairs[name]])
        np.testing.assert_array_equal(h["quantized"], np.histogram(q, edges)[0])
        assert sum(h["float"]) == f.size
    figures = debugger.plot()
    assert len(figures) == 2
