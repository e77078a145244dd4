"""The core workflow: quantize, verify every quantized layer against numpy, fidelity, CSV, denylists."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tests import models
from tests.helpers import assert_metrics_close, dataset, reference_statistics, session

import quantdebug as qd

CSV_HEADER = (
    "op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,"
    "scale,zero_point,tensor_name,node_name,impact"
)
REFERENCE_MODELS = [
    "conv_relu",
    "depthwise",
    "matmul_gemm",
    "add_mul_concat",
    "sigmoid_softmax",
    "mobilenetv3_block",
    "all_ops",
]


def make(
    name: str, rng: np.random.Generator, samples: int = 6, **kwargs: object
) -> tuple[qd.QuantizationDebugger, list[dict[str, np.ndarray]]]:
    model = models.ALL_MODELS[name](rng)
    feeds = [models.input_feed(model, rng) for _ in range(samples)]
    debugger = qd.QuantizationDebugger(model, dataset(feeds), **kwargs)  # type: ignore[arg-type]
    return debugger, feeds


@pytest.mark.parametrize("name", REFERENCE_MODELS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_layer_metrics_match_numpy_reference(name: str, per_channel: bool, rng: np.random.Generator) -> None:
    debugger, feeds = make(name, rng, quant_config=qd.QuantConfig(per_channel=per_channel))
    debugger.run()
    stats = debugger.layer_statistics
    assert stats, "no layer was verified"
    reference = reference_statistics(debugger, feeds)
    assert list(reference) == list(stats)
    for tensor, want in reference.items():
        assert_metrics_close(stats[tensor], want, f"{name}/{tensor}")


@pytest.mark.parametrize("name", sorted(models.ALL_MODELS))
def test_quantized_path_is_bit_exact_with_deployed_model(name: str, rng: np.random.Generator) -> None:
    debugger, _ = make(name, rng, samples=4)
    deployed = session(debugger.get_nondebug_quantized_model())
    debug = session(debugger.get_debug_quantized_model())
    outputs = [o.name for o in deployed.get_outputs()]
    for batch in (1, 3):
        feed = models.input_feed(debugger.float_model, rng, batch=batch)
        expected = deployed.run(outputs, feed)
        full = dict(feed)
        full["__qd/rows_shape"] = np.array([1, -1], dtype=np.int64)  # row layout does not touch the quantized path
        got = debug.run(outputs, full)
        for a, b, out in zip(expected, got, outputs):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: output {out} differs at batch {batch}")


def test_every_quantizable_node_has_a_row_or_reason(rng: np.random.Generator) -> None:
    from quantdebug.pipeline.plan import default_op_types

    debugger, _ = make("all_ops", rng)
    debugger.run()
    coverage = debugger.coverage()
    quantizable = set(default_op_types())
    for c in coverage:
        assert c["reason"], c
        if c["op_type"] in quantizable:
            assert c["status"] == "verified", c
        elif c["op_type"]:
            assert c["status"] == "float", c
    rows = {r.node_name for r in debugger.layer_rows}
    assert rows == {c["node"] for c in coverage if c["reason"].startswith("quantized (")}
    users = {u for c in coverage for u in c["user_nodes"].split(", ") if u}
    assert users == {n.name for n in models.all_ops(rng).graph.node}, "every user node is accounted for"


def test_csv_has_tflite_columns_and_parses(rng: np.random.Generator) -> None:
    debugger, _ = make("conv_relu", rng)
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    text = buffer.getvalue()
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(debugger.layer_statistics)
    for row, (tensor, metrics) in zip(rows, debugger.layer_statistics.items()):
        assert row["tensor_name"] == tensor
        assert float(row["mean_squared_error"]) == pytest.approx(metrics["mean_squared_error"], rel=1e-12)
    idx = [int(r["tensor_idx"]) for r in rows]
    assert idx == sorted(idx), "rows are in graph order"
    frame = debugger.layer_statistics_frame()
    expected = np.sqrt(frame["mean_squared_error"]) / frame["scale"]
    np.testing.assert_allclose(frame["rmse/scale"], expected)
    np.testing.assert_allclose(frame["range"], 255.0 * frame["scale"])


def test_one_sample_stddev_identity(rng: np.random.Generator) -> None:
    debugger, _ = make("conv_relu", rng, samples=1)
    debugger.run()
    for metrics in debugger.layer_statistics.values():
        var = metrics["mean_squared_error"] - metrics["mean_error"] ** 2
        assert metrics["stddev"] ** 2 == pytest.approx(var, rel=1e-3, abs=1e-9)


def test_metrics_of_a_million_element_tensor_stay_accurate(rng: np.random.Generator) -> None:
    """float32 reductions over 1M elements: the sum of squares must not drift (ReduceSumSquare did, by 5e-4)."""
    weight = onnx.numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
        "big",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 256, 256])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, 256, 256])],
        [weight],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = models.IR_VERSION
    feeds = [{"x": (rng.standard_normal((1, 3, 256, 256)) + 0.5).astype(np.float32)} for _ in range(2)]
    debugger = qd.QuantizationDebugger(model, dataset(feeds))
    debugger.run()
    (want,) = reference_statistics(debugger, feeds).values()
    got = debugger.layer_statistics["y"]
    assert got["num_elements"] == want["num_elements"] == 16 * 256 * 256
    for metric in ("mean_squared_error", "stddev", "max_abs_error"):
        assert got[metric] == pytest.approx(want[metric], rel=1e-4), metric


def _activation_dequantizes(model: onnx.ModelProto, path: object, disabled: list[str] | None) -> int:
    """DequantizeLinear nodes of non-constant tensors in ``model`` as onnxruntime optimizes it."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(path)
    so.log_severity_level = 4
    ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    optimized = onnx.load(str(path))
    constants = {i.name for i in optimized.graph.initializer}
    return sum(n.op_type == "DequantizeLinear" and n.input[0] not in constants for n in optimized.graph.node)


def test_debug_session_dequantizes_each_read_tensor_once_more_at_most(
    rng: np.random.Generator, tmp_path: object
) -> None:
    """onnxruntime gives each consumer of a DequantizeLinear its own copy; the statistics and twins that
    read a quantized tensor share one, so the debug session dequantizes no tensor more than once beyond
    what the deployed model does (without the shared read it was once per statistic and twin)."""
    from quantdebug.pipeline.run._run import _KEEP_IDENTITY

    debugger, _ = make("mobilenetv3_block", rng)
    graph = debugger._graph()
    read = {u.output for u in graph.units} | {b.source for u in graph.units for b in u.boundaries if b.qparams}
    deployed = _activation_dequantizes(debugger.get_nondebug_quantized_model(), tmp_path / "q.onnx", None)  # type: ignore[operator]
    debug = _activation_dequantizes(graph.model, tmp_path / "d.onnx", list(_KEEP_IDENTITY))  # type: ignore[operator]
    assert debug <= deployed + len(read)


def test_batched_run_equals_unbatched(rng: np.random.Generator) -> None:
    debugger, _ = make("mobilenetv3_block", rng, samples=7)
    debugger.options = qd.DebugOptions(batch_size=1)
    debugger.run()
    single = debugger.layer_statistics
    debugger.options = qd.DebugOptions(batch_size=4)
    debugger.run()
    batched = debugger.layer_statistics
    assert single.keys() == batched.keys()
    for tensor in single:
        for metric, value in single[tensor].items():
            assert batched[tensor][metric] == pytest.approx(value, rel=1e-4, abs=1e-8), (tensor, metric)


def test_batching_is_refused_when_it_mixes_samples(rng: np.random.Generator) -> None:
    debugger, feeds = make("reshape_mixes_batch", rng, samples=5)
    debugger.run()
    reference = reference_statistics(debugger, feeds)
    for tensor, want in reference.items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)


def test_refused_batching_keeps_the_checks_single_runs_and_runs_the_rest_alone(rng: np.random.Generator) -> None:
    """The batching check is the run's own first batch: stacked, then its first two samples alone. On a
    model whose stacked rows differ from its single runs, those two singles are the first results and
    every later sample runs alone; the statistics are the numpy reference's."""
    from quantdebug.pipeline.run._run import DebugLoop, RunState

    debugger, feeds = make("reshape_mixes_batch", rng, samples=6)
    graph = debugger._graph()
    runs: list[int] = []
    inner = session(graph.model)

    class Counted:
        def run(self, names: object, feed: dict[str, np.ndarray]) -> object:
            runs.append(next(iter(feed.values())).shape[0])
            return inner.run(names, feed)  # type: ignore[arg-type]

    options = debugger.options.replace(batch_size=4, check_fidelity=False)
    loop = DebugLoop(graph, options, Counted(), None, None, None)  # type: ignore[arg-type]
    state = RunState.empty(len(graph.units), options)
    loop.process(iter(feeds), state, batch_free=True, advance=lambda n: None)
    assert runs == [2, 1, 1, 1, 1, 1, 1], "the check's two samples stacked, its two singles kept, then one at a time"
    assert state.samples == len(feeds)
    runs.clear()
    again = RunState.empty(len(graph.units), options)
    loop.process(iter(feeds), again, batch_free=True, advance=lambda n: None)
    assert runs == [1] * len(feeds), "the refusal is remembered"
    assert np.array_equal(again.layer.sums, state.layer.sums)
    debugger.run()
    for tensor, want in reference_statistics(debugger, feeds).items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)


def test_denylisted_nodes_stay_float_without_recalibrating(rng: np.random.Generator) -> None:
    calls = {"n": 0}
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(4)]

    def data():
        calls["n"] += 1
        return iter(feeds)

    debugger = qd.QuantizationDebugger(model, data)
    debugger.run()
    reads = calls["n"]
    first = debugger.layer_rows[0]
    debugger.options = qd.DebugOptions(denylisted_nodes=[first.tensor_name])
    assert calls["n"] == reads, "changing the denylist must not read the representative dataset again"
    quantized = debugger.get_nondebug_quantized_model()
    float_nodes = {n.name for n in quantized.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    assert first.node_name in float_nodes
    consumers = [n for n in quantized.graph.node if n.name == first.node_name]
    produced = set(consumers[0].output)
    quantized_outputs = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert not produced & quantized_outputs, "a denylisted node's output is still quantized"
    debugger.run()
    assert first.tensor_name not in debugger.layer_statistics
    ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])


def test_denylisted_ops_and_regex(rng: np.random.Generator) -> None:
    debugger, _ = make("all_ops", rng)
    debugger.options = qd.DebugOptions(denylisted_ops=["Conv"])
    debugger.run()
    assert all(r.op_name != "Conv" for r in debugger.layer_rows)
    names = [n.name for n in debugger.float_model.graph.node if n.op_type == "Softmax"]
    debugger.options = qd.DebugOptions(denylisted_nodes=["re:^" + names[0] + "$"])
    debugger.run()
    assert names[0] not in {r.node_name for r in debugger.layer_rows}


def test_unknown_names_are_errors_with_suggestions(rng: np.random.Generator) -> None:
    debugger, _ = make("conv_relu", rng)
    node = debugger.layer_rows[0].node_name if debugger._rows else debugger.layer_names[0]
    with pytest.raises(qd.ConfigError, match="did you mean"):
        debugger.options = qd.DebugOptions(denylisted_nodes=[node + "x"])
    with pytest.raises(qd.ConfigError, match="no 'ReduceMean' node"):
        debugger.options = qd.DebugOptions(denylisted_ops=["ReduceMean"])


def test_op_type_never_quantized_warns(rng: np.random.Generator) -> None:
    debugger, _ = make("all_ops", rng)
    present = {n.op_type for n in debugger.float_model.graph.node}
    from quantdebug.pipeline.plan import default_op_types

    never = sorted(present - set(default_op_types()))
    if not never:
        pytest.skip("all_ops has no op type that onnxruntime leaves in float")
    with pytest.warns(UserWarning, match="never quantized"):
        debugger.options = qd.DebugOptions(denylisted_ops=[never[0]])


def test_duplicate_and_unnamed_nodes_get_canonical_names(rng: np.random.Generator) -> None:
    for name in ("unnamed_nodes", "duplicate_names"):
        debugger, _ = make(name, rng)
        debugger.run()
        names = [r.node_name for r in debugger.layer_rows]
        assert all(names) and len(set(names)) == len(names)
        debugger.options = qd.DebugOptions(denylisted_nodes=[names[0]])
        debugger.run()
        assert names[0] not in [r.node_name for r in debugger.layer_rows]


def test_all_denylisted_gives_clear_error(rng: np.random.Generator) -> None:
    debugger, _ = make("conv_relu", rng)
    with pytest.warns(UserWarning, match="no quantized layer"):
        debugger.options = qd.DebugOptions(denylisted_nodes=["re:.*"])
    with pytest.raises(qd.QuantDebugError, match="nothing to verify"):
        debugger.run()


def test_fidelity_is_checked_during_run(rng: np.random.Generator) -> None:
    debugger, _ = make("mobilenetv3_block", rng)
    debugger.run()
    assert debugger.fidelity == 0.0


def test_fidelity_check_flags_a_debug_path_that_differs_from_the_deployed_model(rng: np.random.Generator) -> None:
    from quantdebug.pipeline.run._run import DebugLoop, RunState

    debugger, feeds = make("conv_relu", rng)
    other = qd.QuantizationDebugger(
        debugger.float_model, dataset([{k: v * 3 for k, v in f.items()} for f in feeds])
    ).get_nondebug_quantized_model()  # calibrated on other data: other scales, other outputs
    graph = debugger._graph()
    deployed_runs: list[int] = []
    deployed = session(other)

    class Counted:
        def run(self, names: object, feed: dict[str, np.ndarray]) -> object:
            deployed_runs.append(next(iter(feed.values())).shape[0])
            return deployed.run(names, feed)  # type: ignore[arg-type]

    loop = DebugLoop(graph, debugger.options, session(graph.model), Counted, None, None)  # type: ignore[arg-type]
    state = RunState.empty(len(graph.units), debugger.options)
    with pytest.warns(UserWarning, match="differs from the deployed quantized model"):
        loop.process(iter(feeds), state, batch_free=True, advance=lambda n: None)
    assert state.fidelity is not None and state.fidelity > 0
    assert state.samples == len(feeds)
    assert deployed_runs == [2], "compared on the run's first batch: the batching check's two samples"
    # a later run over the same first samples gets the same answer (and the warning) without running
    # the deployed model again; other first samples are compared again
    again = RunState.empty(len(graph.units), debugger.options)
    with pytest.warns(UserWarning, match="differs from the deployed quantized model"):
        loop.process(iter(feeds), again, batch_free=True, advance=lambda n: None)
    assert again.fidelity == state.fidelity and len(deployed_runs) == 1
    shifted = RunState.empty(len(graph.units), debugger.options)
    with pytest.warns(UserWarning, match="differs from the deployed quantized model"):
        loop.process(iter(feeds[1:]), shifted, batch_free=True, advance=lambda n: None)
    assert len(deployed_runs) == 2 and shifted.fidelity is not None and shifted.fidelity > 0


def test_later_runs_reuse_the_debug_sessions_until_the_plan_changes(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quantdebug.runtime

    made: list[str] = []
    debug_runs: list[int] = []
    real = quantdebug.runtime.make_session

    class Counted:
        def __init__(self, inner: ort.InferenceSession) -> None:
            self.inner = inner

        def run(self, names: object, feed: dict[str, np.ndarray]) -> object:
            debug_runs.append(next(iter(feed.values())).shape[0])
            return self.inner.run(names, feed)

    def counting(model: object, **kwargs: object) -> object:
        made.append(str(kwargs.get("what")))
        made_session = real(model, **kwargs)  # type: ignore[arg-type]
        return Counted(made_session) if kwargs.get("what") == "debug model" else made_session

    monkeypatch.setattr(quantdebug.runtime, "make_session", counting)
    debugger, feeds = make("mobilenetv3_block", rng, samples=9)
    debugger.run()
    first = debugger.layer_statistics
    assert made == ["debug model", "quantized model"] and debugger.fidelity == 0.0
    # the first two samples stacked, then alone (the batching check; the stacked run is kept), then the rest
    # in batches of 4
    assert debug_runs == [2, 1, 1, 4, 3]
    debug_runs.clear()
    debugger.run()
    assert made == ["debug model", "quantized model"], "the second run made new sessions"
    assert debug_runs == [2, 4, 3], "the second run checked batching again (or batched otherwise)"
    assert debugger.layer_statistics == first
    debugger.options = qd.DebugOptions(denylisted_nodes=[debugger.layer_names[0]])
    debugger.run()
    assert made.count("debug model") == 2, "a new plan needs a new debug session"
    for tensor, want in reference_statistics(debugger, feeds).items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)


def test_nan_metric_samples_are_ignored_like_nanmean(rng: np.random.Generator) -> None:
    from quantdebug.pipeline.run._accumulate import MeanAccumulator

    values = rng.normal(size=(5, 3, 2))
    values[1, 0, 0] = math.nan
    a = MeanAccumulator(3, ["x", "y"])
    a.update(values[:2])
    b = MeanAccumulator(3, ["x", "y"])
    b.update(values[2:])
    merged = a.merge(b)
    np.testing.assert_allclose(merged.means(), np.nanmean(values, axis=0))


def test_interrupted_run_keeps_statistics_and_resumes(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(10)]
    state = {"fail_at": 6}

    def flaky():
        for i, feed in enumerate(feeds):
            if i == state["fail_at"]:
                state["fail_at"] = -1
                raise KeyboardInterrupt
            yield feed

    debugger = qd.QuantizationDebugger(
        model, dataset(feeds), debug_dataset=flaky, debug_options=qd.DebugOptions(batch_size=1)
    )
    with pytest.raises(qd.RunInterrupted, match="after 6 samples"):
        debugger.run()
    assert debugger.samples_seen == 6
    partial = debugger.layer_statistics
    reference = reference_statistics(debugger, feeds[:6])
    for tensor, want in reference.items():
        assert_metrics_close(partial[tensor], want, tensor)
    debugger.run(resume=True)
    assert debugger.samples_seen == 10
    full = reference_statistics(debugger, feeds)
    for tensor, want in full.items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)
    fresh = qd.QuantizationDebugger(model, dataset(feeds), calibration=debugger.calibration)
    fresh.run()
    assert (
        fresh.statistics().provenance["dataset_fingerprint"] == debugger.statistics().provenance["dataset_fingerprint"]
    )


def test_data_error_midway_names_the_sample(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    feeds = [models.input_feed(model, rng) for _ in range(5)]

    def broken():
        for i, feed in enumerate(feeds):
            if i == 3:
                raise OSError("disk went away")
            yield feed

    debugger = qd.QuantizationDebugger(model, dataset(feeds), debug_dataset=broken)
    with pytest.raises(qd.RunInterrupted) as info:
        debugger.run()
    assert "sample 3" in str(info.value) and "disk went away" in str(info.value)
    assert debugger.samples_seen == 3


def test_sharded_runs_merge_to_the_single_process_result(rng: np.random.Generator) -> None:
    from quantdebug.executors import LocalExecutor

    model = models.all_ops(rng)
    feeds = [models.input_feed(model, rng) for _ in range(9)]
    calibration = qd.calibrate(model, dataset(feeds))
    merged = qd.calibrate(model, dataset(feeds), executor=LocalExecutor(shards=3))
    assert merged.ranges(qd.QuantConfig()) == calibration.ranges(qd.QuantConfig())
    for name, stats in calibration.stats.items():
        assert merged.stats[name] == stats, name
    # one sample a run: shards stack other samples together than one process does, and a stacked
    # run's float32 sums differ in the last bits; merging itself must be exact
    options = qd.DebugOptions(batch_size=1)
    single = qd.QuantizationDebugger(model, dataset(feeds), calibration=calibration, debug_options=options)
    single.run()
    sharded = qd.QuantizationDebugger(model, dataset(feeds), calibration=calibration, debug_options=options)
    sharded.run(executor=LocalExecutor(shards=3))
    assert sharded.samples_seen == single.samples_seen == 9
    for tensor, metrics in single.layer_statistics.items():
        for metric, value in metrics.items():
            assert sharded.layer_statistics[tensor][metric] == pytest.approx(value, rel=1e-9, abs=1e-15)
    assert (
        sharded.statistics().provenance["dataset_fingerprint"] == single.statistics().provenance["dataset_fingerprint"]
    )


def test_nothing_is_written_beside_the_model_or_in_the_working_folder(
    rng: np.random.Generator, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "models"
    work_dir = tmp_path / "work"
    model_dir.mkdir()
    work_dir.mkdir()
    model = models.conv_relu(rng)
    path = model_dir / "model.onnx"
    onnx.save(model, str(path))
    monkeypatch.chdir(work_dir)
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    debugger = qd.QuantizationDebugger(str(path), dataset(feeds), quant_config=qd.QuantConfig(per_channel=True))
    debugger.run()
    debugger.options = qd.DebugOptions(denylisted_nodes=[debugger.layer_names[0]])
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx"]
    assert list(work_dir.iterdir()) == []
    frame = debugger.layer_statistics_frame() if debugger._rows else None
    assert frame is None or "user_nodes" in frame


def test_old_opset_model_is_upgraded_for_per_channel(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng, opset=13)
    model.opset_import[0].version = 12  # the same ops in opset 12, as real exports (PaddleOCR's) ship them
    onnx.checker.check_model(model)
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    debugger = qd.QuantizationDebugger(model, dataset(feeds), quant_config=qd.QuantConfig(per_channel=True))
    debugger.run()
    quantized = debugger.get_nondebug_quantized_model()
    assert any(
        n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in quantized.graph.node
    )
    session(quantized).run(None, feeds[0])
    for tensor, want in reference_statistics(debugger, feeds).items():
        assert_metrics_close(debugger.layer_statistics[tensor], want, tensor)


def test_coverage_says_when_onnxruntime_fuses_a_denylisted_node(rng: np.random.Generator) -> None:
    debugger, _ = make("add_mul_concat", rng)
    debugger.options = qd.DebugOptions(denylisted_nodes=["avgpool"])
    entry = next(c for c in debugger.coverage() if c["node"] == "avgpool")
    runtime = {n.name: n.op_type for n in debugger._plan.optimized.graph.node}
    assert entry["status"] == "float"
    if runtime.get("avgpool") != "AveragePool":
        assert "fuses it" in entry["reason"], entry
    else:
        assert "fuses" not in entry["reason"], entry
