"""Hostile and unusual models: each one either works or stops with one clear ModelError naming what is at fault."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests import hostile, models
from tests.helpers import assert_metrics_close, dataset, reference_statistics

import quantdebug as qd
from quantdebug.errors import ModelTooLargeError
from quantdebug.pipeline.prepare._load import load_model
from quantdebug.pipeline.run._debug_model import ROWS_INPUT
from quantdebug.runtime import _session, make_session
from quantdebug.support import external as _external


def feeds_for(model: onnx.ModelProto, rng: np.random.Generator, n: int = 3) -> list[dict[str, np.ndarray]]:
    return [models.input_feed(model, rng) for _ in range(n)]


def debugger(model: object, feeds: list[dict[str, np.ndarray]], **kw: object) -> qd.QuantizationDebugger:
    return qd.QuantizationDebugger(model, dataset(feeds), **kw)  # type: ignore[arg-type]


def assert_matches_reference(dbg: qd.QuantizationDebugger, feeds: list[dict[str, np.ndarray]]) -> None:
    dbg.run()
    stats = dbg.layer_statistics
    assert stats, "no layer was verified"
    reference = reference_statistics(dbg, feeds)
    assert list(reference) == list(stats)
    for tensor, want in reference.items():
        assert_metrics_close(stats[tensor], want, tensor)


# -- bytes that are not a model --------------------------------------------------------------------


def test_truncated_model_file_is_a_clear_error(rng: np.random.Generator, tmp_path: Path) -> None:
    data = models.conv_relu(rng).SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(qd.ModelError, match=r"not an ONNX model.*") as info:
        load_model(path)
    assert "truncated.onnx" in str(info.value)


@pytest.mark.parametrize("given", ["bytes", "path"])
def test_random_bytes_are_not_a_model(given: str, tmp_path: Path) -> None:
    data = np.random.default_rng(11).bytes(1000)
    path = tmp_path / "random.onnx"
    path.write_bytes(data)
    with pytest.raises(qd.ModelError, match="not an ONNX model"):
        load_model(data if given == "bytes" else path)


def test_empty_file_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(qd.ModelError, match="no graph"):
        load_model(tmp_path / "empty.onnx")


@pytest.mark.parametrize(
    "message",
    [
        numpy_helper.from_array(np.zeros(3, np.float32), "t"),
        helper.make_graph([], "g", [], []),
        helper.make_opsetid("", 17),
    ],
    ids=["TensorProto", "GraphProto", "OperatorSetIdProto"],
)
def test_valid_protobuf_that_is_not_a_model(message: object) -> None:
    with pytest.raises(qd.ModelError, match=r"not an ONNX model|no nodes|no graph"):
        load_model(message.SerializeToString())  # type: ignore[attr-defined]


def test_model_path_that_is_a_folder_or_missing(tmp_path: Path) -> None:
    with pytest.raises(qd.ModelError, match="is a folder"):
        load_model(tmp_path)
    with pytest.raises(qd.ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_model_of_the_wrong_python_type_is_named() -> None:
    with pytest.raises(qd.ModelError, match="got dict"):
        load_model({"graph": 1})  # type: ignore[arg-type]


# -- valid protobuf, invalid model ------------------------------------------------------------------


def test_graph_without_nodes_or_outputs(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    empty = onnx.ModelProto()
    empty.CopyFrom(model)
    del empty.graph.node[:]
    with pytest.raises(qd.ModelError, match="no nodes"):
        load_model(empty)
    no_out = onnx.ModelProto()
    no_out.CopyFrom(model)
    del no_out.graph.output[:]
    with pytest.raises(qd.ModelError, match="no graph outputs"):
        load_model(no_out)


def test_dangling_node_input_names_the_node(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    relu = next(n for n in model.graph.node if n.name == "relu1")
    relu.input[0] = "no_such_tensor"
    with pytest.raises(qd.ModelError, match="not a valid ONNX model") as info:
        load_model(model)
    assert "no_such_tensor" in str(info.value) and "relu1" in str(info.value)
    assert "\n" not in str(info.value)


def test_tensor_written_twice_names_the_tensor(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    model.graph.node[1].output[0] = model.graph.node[0].output[0]
    with pytest.raises(qd.ModelError, match="conv1_out"):
        load_model(model)


def test_graph_output_without_type_is_named(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    model.graph.output[0].ClearField("type")
    with pytest.raises(qd.ModelError, match=r"graph output 0 \('output'\) has no type"):
        load_model(model)


def test_unknown_op_names_node_and_op(rng: np.random.Generator) -> None:
    with pytest.raises(qd.ModelError, match=r"node 'odd' runs op 'FooBar'.*default ONNX domain"):
        load_model(hostile.odd_op(rng, "FooBar"))


def test_custom_domain_op_names_op_and_domain(rng: np.random.Generator) -> None:
    model = hostile.odd_op(rng, "FooBar", "com.acme")
    feeds = feeds_for(model, rng)
    with pytest.raises(qd.ModelError, match=r"node 'odd' runs op 'FooBar' from domain 'com.acme'.*custom"):
        debugger(model, feeds)


def test_custom_domain_op_inside_a_subgraph_is_named(rng: np.random.Generator) -> None:
    model = hostile.with_subgraph(rng, "If", body_op=("Frobnicate", "com.acme"))
    with pytest.raises(
        qd.ModelError, match=r"If 'branch' / \w+_branch: node '\w+' runs op 'Frobnicate' from domain 'com.acme'"
    ):
        load_model(model)


def test_unknown_op_in_known_microsoft_domain_is_named(rng: np.random.Generator) -> None:
    with pytest.raises(qd.ModelError, match=r"'NoSuchOp'.*domain 'com.microsoft'"):
        load_model(hostile.odd_op(rng, "NoSuchOp", "com.microsoft"))


def test_local_function_in_a_custom_domain_runs(rng: np.random.Generator) -> None:
    model = hostile.local_function(rng)
    feeds = feeds_for(model, rng)
    dbg = debugger(model, feeds)
    dbg.run()
    assert dbg.layer_statistics


def test_opset_newer_than_onnxruntime_names_the_opset(rng: np.random.Generator) -> None:
    opset = onnx.defs.onnx_opset_version() + 2
    model = hostile.odd_op(rng, "Relu", opset=opset)
    model.ir_version = onnx.IR_VERSION
    with pytest.raises(qd.ModelError, match=rf"opset {opset}.*onnxruntime") as info:
        debugger(model, feeds_for(model, rng))
    assert "onnxruntime_src" not in str(info.value)


def test_op_without_a_cpu_kernel_names_the_node(rng: np.random.Generator) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["L"])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["H", "W", 3])
    graph = helper.make_graph([helper.make_node("ImageDecoder", ["x"], ["y"], name="decode")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=models.IR_VERSION)
    with pytest.raises(qd.ModelError, match=r"ImageDecoder.*'decode'") as info:
        debugger(model, [{"x": np.ones(8, np.uint8)}])
    assert "[ONNXRuntimeError]" not in str(info.value)


def test_old_opset_is_upgraded(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    model.opset_import[0].version = 11
    feeds = feeds_for(model, rng)
    dbg = debugger(model, feeds)
    assert any("upgraded opset 11" in note for note in dbg._pre.notes)
    assert_matches_reference(dbg, feeds)


def test_node_invalid_for_the_model_opset_is_named(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    model.opset_import[0].version = 6  # Clip took its bounds as attributes until opset 11
    with pytest.raises(qd.ModelError, match=r"node 'clip1', op Clip"):
        debugger(model, feeds_for(model, rng))


# -- models that must work --------------------------------------------------------------------------


def test_several_inputs_and_outputs_match_reference(rng: np.random.Generator) -> None:
    model = models.multi_io(rng)
    feeds = feeds_for(model, rng, 4)
    dbg = debugger(model, feeds)
    assert_matches_reference(dbg, feeds)
    as_lists = [[f["image"], f["features"]] for f in feeds]
    other = qd.QuantizationDebugger(model, lambda: iter(as_lists))
    other.run()
    assert other.layer_statistics == dbg.layer_statistics, "list samples in input order equal dict samples"


def test_dynamic_spatial_shapes_match_reference(rng: np.random.Generator) -> None:
    model = hostile.dynamic_spatial(rng)
    feeds = [{"input": rng.standard_normal((1, 3, h, w)).astype(np.float32)} for h, w in ((16, 16), (12, 20), (9, 7))]
    assert_matches_reference(debugger(model, feeds), feeds)


def test_graph_output_without_shape_runs(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    model.graph.output[0].type.tensor_type.ClearField("shape")  # onnxruntime runs it; the checker would refuse
    feeds = feeds_for(model, rng)
    dbg = debugger(model, feeds)
    dbg.run()
    assert dbg.layer_statistics


def test_external_data_model_loads_from_its_path(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    assert os.path.getsize(path) < 2000, "the weights really are outside the .onnx file"
    feeds = feeds_for(model, rng)
    from_path = debugger(path, feeds)
    from_path.run()
    in_memory = debugger(model, feeds)
    in_memory.run()
    assert from_path.layer_statistics == in_memory.layer_statistics


def test_external_data_in_a_subfolder_loads(rng: np.random.Generator, tmp_path: Path) -> None:
    model = models.matmul_gemm(rng)
    path = hostile.save_external(model, tmp_path / "ext", location="data/weights.bin")
    loaded = load_model(path)
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.graph.initializer[0]), numpy_helper.to_array(model.graph.initializer[0])
    )


@pytest.mark.parametrize("given", ["bytes", "proto"])
def test_external_data_model_without_its_folder_is_refused(
    given: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    path = hostile.save_external(models.conv_relu(rng), tmp_path / "ext")
    source: object = path.read_bytes() if given == "bytes" else onnx.load(str(path), load_external_data=False)
    with pytest.raises(qd.ModelError, match=r"external file 'weights.bin'.*pass the model's path"):
        load_model(source)  # type: ignore[arg-type]


# -- external data that points outside the model's folder ---------------------------------------------


def _outside(tmp_path: Path) -> Path:
    """A real weights file outside the model's folder, with the right bytes: refused only for where it is."""
    source = tmp_path / "ext" / "weights.bin"
    secret = tmp_path / "outside" / "weights.bin"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(source.read_bytes())
    return secret


@pytest.mark.parametrize("case", ["dotdot", "nested_dotdot", "absolute", "symlink_file", "symlink_folder"])
def test_external_data_path_traversal_is_refused(case: str, rng: np.random.Generator, tmp_path: Path) -> None:
    path = hostile.save_external(models.conv_relu(rng), tmp_path / "ext")
    secret = _outside(tmp_path)
    location = {
        "dotdot": "../outside/weights.bin",
        "nested_dotdot": "sub/../../outside/weights.bin",
        "absolute": str(secret),
        "symlink_file": "link.bin",
        "symlink_folder": "linked/weights.bin",
    }[case]
    if case == "symlink_file":
        (tmp_path / "ext" / "link.bin").symlink_to(secret)
    if case == "symlink_folder":
        (tmp_path / "ext" / "linked").symlink_to(secret.parent, target_is_directory=True)
    (tmp_path / "ext" / "sub").mkdir()
    hostile.relocate_external(path, location)
    with pytest.raises(qd.ModelError, match="outside the model's folder") as info:
        load_model(path)
    assert "path traversal" in str(info.value)
    with pytest.raises(qd.ModelError, match="outside the model's folder"):
        debugger(path, feeds_for(models.conv_relu(rng), rng))


def test_external_data_symlink_inside_the_folder_is_refused_clearly(rng: np.random.Generator, tmp_path: Path) -> None:
    path = hostile.save_external(models.conv_relu(rng), tmp_path / "ext")
    (tmp_path / "ext" / "alias.bin").symlink_to(tmp_path / "ext" / "weights.bin")
    hostile.relocate_external(path, "alias.bin")
    with pytest.raises(qd.ModelError, match="symbolic link"):
        load_model(path)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "which is missing"),
        ("empty_location", "names no file"),
        ("nul", "NUL byte"),
        ("truncated", "has only"),
        ("folder", "which is missing"),
    ],
)
def test_broken_external_data_is_named(case: str, expected: str, rng: np.random.Generator, tmp_path: Path) -> None:
    path = hostile.save_external(models.conv_relu(rng), tmp_path / "ext")
    weights = tmp_path / "ext" / "weights.bin"
    if case == "missing":
        weights.unlink()
    elif case == "empty_location":
        hostile.relocate_external(path, "")
    elif case == "nul":
        hostile.relocate_external(path, "weights.bin\x00.txt")
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif case == "folder":
        (tmp_path / "ext" / "data").mkdir()
        hostile.relocate_external(path, "data")
    with pytest.raises(qd.ModelError, match=expected) as info:
        load_model(path)
    assert "initializer 'conv1.weight'" in str(info.value) or "initializer" in str(info.value)


# -- models over protobuf's 2 GB limit ------------------------------------------------------------------


@pytest.mark.parametrize("given", ["proto", "bytes", "path"])
def test_model_over_the_protobuf_limit_is_refused_clearly(
    given: str, rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks behind the 2 GB limit, exercised with the limit lowered to half the size of a small model.

    Only a path whose weights are in external data can be over the limit (see the tests below).
    """
    model = models.conv_relu(rng)
    monkeypatch.setattr(_external, "PROTOBUF_LIMIT", model.ByteSize() // 2)
    source = {"proto": model, "bytes": model.SerializeToString(), "path": tmp_path / "big.onnx"}[given]
    (tmp_path / "big.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelTooLargeError, match=r"over protobuf's 2 GB limit.*save_as_external_data=True"):
        load_model(source)  # type: ignore[arg-type]


@pytest.fixture
def over_limit(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Lower the 2 GB limit below a small model with its external data, so it takes the big-model path.

    Tensors of 64 bytes and more stay in external data (1 KB normally), so conv weights do.
    """

    def lower(path: Path) -> None:
        weights = os.path.getsize(path.parent / "weights.bin")
        monkeypatch.setattr(_external, "PROTOBUF_LIMIT", os.path.getsize(path) + weights // 2)
        monkeypatch.setattr(_external, "MIN_EXTERNAL_BYTES", 64)

    return lower


def test_model_over_the_limit_with_external_data_debugs_like_in_memory(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    in_memory = debugger(model, feeds)
    in_memory.run()
    over_limit(path)
    big = debugger(path, feeds)
    big.run()
    weights = {t.name: t for t in _external.referenced_tensors(big.float_model)}
    assert {"conv1.weight", "conv2.weight"} <= set(weights), "the weights stayed in external data"
    read_from = {e.value for e in weights["conv1.weight"].external_data if e.key == "location"}
    assert read_from == {_external.PREFIX + str((tmp_path / "ext" / "weights.bin").resolve())}, (
        "weights that pre-processing left unchanged are read from the user's file, not from a copy"
    )
    assert _external.has_references(big._plan.optimized)
    assert big.layer_statistics == in_memory.layer_statistics
    assert big.model_statistics == in_memory.model_statistics
    assert big.fidelity == in_memory.fidelity
    assert big.weight_statistics() == in_memory.weight_statistics()
    np.testing.assert_array_equal(big.layer_tensors("relu1_out")["diff"], in_memory.layer_tensors("relu1_out")["diff"])


def test_calibration_of_a_model_over_the_limit_matches_the_in_memory_model(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    calibration = qd.calibrate(model, dataset(feeds))
    over_limit(path)
    big = qd.calibrate(path, dataset(feeds))
    assert big.fingerprint == calibration.fingerprint, "the same weights give the same fingerprint"
    debugger(path, feeds, calibration=calibration).run()


def test_sessions_of_a_model_over_the_limit_share_the_mapped_weights_or_copy_them(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions run on memory maps of the weight files; where onnxruntime's optimizers need the weights
    in the model, on a copy; the outputs are the same."""
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feed = feeds_for(model, rng, 1)[0]
    want = {level: make_session(model, level=level).run(None, feed) for level in ("disabled", "all")}
    over_limit(path)
    big = load_model(path)
    assert _external.has_references(big)
    shared = []
    real = _session._shared_weights_session

    def spy(*args: Any) -> Any:
        shared.append(real(*args))
        return shared[-1]

    monkeypatch.setattr(_session, "_shared_weights_session", spy)
    for got, ref in zip(make_session(big, level="disabled").run(None, feed), want["disabled"], strict=True):
        np.testing.assert_array_equal(got, ref)
    assert shared, "the session ran on the mapped weights"
    for got, ref in zip(make_session(big, level="all").run(None, feed), want["all"], strict=True):
        np.testing.assert_array_equal(got, ref)  # the Conv fusions read the weights: they were copied

    def refuse(*args: Any) -> Any:
        raise RuntimeError("onnxruntime read an initializer from the model")

    monkeypatch.setattr(_session, "_shared_weights_session", refuse)
    for got, ref in zip(make_session(big, level="all").run(None, feed), want["all"], strict=True):
        np.testing.assert_array_equal(got, ref)


def test_new_options_on_a_model_over_the_limit_delete_the_old_quantized_weights(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    over_limit(path)
    big = debugger(path, feeds)
    big.run()
    first = big.layer_statistics
    nodes = big.layer_names
    folders = set(_external._workspace().iterdir())
    grown = []
    for denied in (nodes[:1], nodes[1:2], []):
        big.options = qd.DebugOptions(denylisted_nodes=denied)
        big.run()
        grown.append(len(set(_external._workspace().iterdir()) - folders))
    assert grown[0] == grown[1] == grown[2], "each re-quantization's weights replace the previous ones on disk"
    assert big.layer_statistics == first, "the plan's own weights are still there after the others went"


def test_sensitivity_and_fix_of_a_model_over_the_limit_match_the_in_memory_model(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    in_memory = debugger(model, feeds)
    sensitivity, fixed = in_memory.sensitivity(), in_memory.fix(max_evals=4)
    over_limit(path)
    big = debugger(path, feeds)
    assert big.sensitivity() == sensitivity
    result = big.fix(max_evals=4)
    grown, done = [], []
    for evaluations in (3, 10):  # an unreachable target: every evaluation quantizes another candidate
        folders = set(_external._workspace().iterdir())
        done.append(big.fix(max_evals=evaluations, target=1e9).evaluations)
        grown.append(len(set(_external._workspace().iterdir()) - folders))
    assert done[1] > done[0]
    assert grown[0] == grown[1], "each candidate's weights are deleted when the search moves on"
    assert result.fixed_quality == fixed.fixed_quality and result.node_precision == fixed.node_precision
    with pytest.raises(ModelTooLargeError, match=r"FixResult\.save_model"):
        result.model  # noqa: B018
    result.save_model(tmp_path / "fixed.onnx")
    assert (tmp_path / "fixed.onnx.data").is_file()
    feed = feeds[0]
    for got, want in zip(_outputs(tmp_path / "fixed.onnx", feed), _outputs(fixed.model, feed), strict=True):
        np.testing.assert_array_equal(got, want)


def test_model_quantized_elsewhere_over_the_limit_debugs_like_in_memory(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models.conv_relu(rng)
    feeds = feeds_for(model, rng)
    quantized = debugger(model, feeds).get_nondebug_quantized_model()
    float_path = hostile.save_external(model, tmp_path / "float")
    quantized_path = hostile.save_external(quantized, tmp_path / "quantized")
    in_memory = debugger(model, feeds, quantized_model=quantized)
    in_memory.run()
    files = [float_path, quantized_path]
    limit = min(os.path.getsize(p) + os.path.getsize(p.parent / "weights.bin") for p in files) - 1
    assert all(os.path.getsize(p) < limit for p in files)
    monkeypatch.setattr(_external, "PROTOBUF_LIMIT", limit)
    monkeypatch.setattr(_external, "MIN_EXTERNAL_BYTES", 64)
    big = debugger(float_path, feeds, quantized_model=quantized_path)
    assert _external.has_references(big._plan.qdq) and _external.has_references(big._prepared.user_model)
    big.run()
    assert big.layer_statistics == in_memory.layer_statistics


def test_model_proto_calls_on_a_model_over_the_limit_name_the_save_method(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    over_limit(path)
    big = debugger(path, feeds)
    with pytest.raises(ModelTooLargeError, match=r"over protobuf's 2 GB limit.*save_nondebug_quantized_model\(path\)"):
        big.get_nondebug_quantized_model()
    with pytest.raises(ModelTooLargeError, match=r"save_debug_quantized_model\(path\)"):
        big.get_debug_quantized_model()
    with pytest.raises(ModelTooLargeError, match=r"output_path="):
        qd.quantize(path, big.calibration)  # type: ignore[arg-type]


def _outputs(path_or_model: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    payload = str(path_or_model) if isinstance(path_or_model, Path) else path_or_model.SerializeToString()  # type: ignore[attr-defined]
    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    return session.run(None, feed)  # type: ignore[return-value]


def test_saved_models_of_a_model_over_the_limit_run_like_the_in_memory_ones(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng)
    in_memory = debugger(model, feeds)
    over_limit(path)
    big = debugger(path, feeds)
    out = tmp_path / "out"
    big.save_nondebug_quantized_model(out / "model.int8.onnx")
    big.save_debug_quantized_model(out / "debug.onnx")
    qd.quantize(path, big.calibration, output_path=out / "quantize.onnx")  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == [
        "debug.onnx",
        "debug.onnx.data",
        "model.int8.onnx",
        "model.int8.onnx.data",
        "quantize.onnx",
        "quantize.onnx.data",
    ], "each model with its data file, and no temporary file left"
    saved = onnx.load(str(out / "model.int8.onnx"), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in saved.graph.initializer)
    assert all(not e.value.startswith(_external.PREFIX) for t in saved.graph.initializer for e in t.external_data)
    expected = in_memory.get_nondebug_quantized_model()
    for feed in feeds:
        want = _outputs(expected, feed)
        for name in ("model.int8.onnx", "quantize.onnx"):
            for got, ref in zip(_outputs(out / name, feed), want, strict=True):
                np.testing.assert_array_equal(got, ref)
        debug_feed = {**feed, ROWS_INPUT: np.array([1, -1], np.int64)}
        got_debug = _outputs(out / "debug.onnx", debug_feed)
        for got, ref in zip(got_debug, _outputs(in_memory.get_debug_quantized_model(), debug_feed), strict=True):
            np.testing.assert_array_equal(got, ref)


def test_interrupted_save_of_a_model_over_the_limit_keeps_the_old_file(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    over_limit(path)
    big = debugger(path, feeds_for(model, rng))
    target = tmp_path / "out" / "model.int8.onnx"
    target.parent.mkdir()
    target.write_bytes(b"the old model")

    def broken(*args: object) -> Iterator[bytes]:
        yield b"\1" * 16
        raise KeyboardInterrupt

    monkeypatch.setattr(_external, "_chunks", broken)
    with pytest.raises(KeyboardInterrupt):
        big.save_nondebug_quantized_model(target)
    assert target.read_bytes() == b"the old model"
    assert [p.name for p in target.parent.iterdir()] == ["model.int8.onnx"], "no partial data or temp folder left"


def test_cli_quantize_writes_a_model_over_the_limit_with_its_data(
    rng: np.random.Generator, tmp_path: Path, over_limit: Callable[[Path], None]
) -> None:
    """In-process, so that the lowered limit applies (the subprocess CLI tests cannot lower it)."""
    from quantdebug.cli import cli

    model = models.conv_relu(rng)
    path = hostile.save_external(model, tmp_path / "ext")
    feeds = feeds_for(model, rng, 4)
    np.savez(tmp_path / "data.npz", input=np.concatenate([f["input"] for f in feeds]))
    expected = qd.quantize(model, qd.calibrate(model, dataset(feeds)))
    over_limit(path)
    out = tmp_path / "out" / "q.onnx"
    cli.main(["quantize", str(path), "--data", str(tmp_path / "data.npz"), "-o", str(out), "-q"], standalone_mode=False)
    assert (out.parent / "q.onnx.data").is_file()
    for got, want in zip(_outputs(out, feeds[0]), _outputs(expected, feeds[0]), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("given", ["path", "bytes"])
def test_reference_syntax_in_an_untrusted_model_cannot_read_other_files(
    given: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    """quantdebug's own spelling of a weight left in its file is refused in a model read from outside."""
    path = hostile.save_external(models.conv_relu(rng), tmp_path / "ext")
    secret = _outside(tmp_path)
    hostile.relocate_external(path, _external.PREFIX + str(secret))
    with pytest.raises(qd.ModelError, match=r"which is missing|no folder to read it from"):
        load_model(path if given == "path" else path.read_bytes())


# -- subgraphs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["If", "Loop", "Scan"])
def test_subgraph_bodies_stay_float_and_coverage_says_so(kind: str, rng: np.random.Generator) -> None:
    model = hostile.with_subgraph(rng, kind)
    feeds = [{"input": rng.standard_normal((1, 4)).astype(np.float32) + sign} for sign in (1.0, -1.0, 1.0)]
    dbg = debugger(model, feeds)
    dbg.run()
    coverage = {c["node"]: c for c in dbg.coverage()}
    holder = next(n.name for n in dbg.float_model.graph.node if n.op_type == kind)
    assert coverage[holder]["status"] == "float"
    assert "subgraph" in coverage[holder]["reason"] and "float" in coverage[holder]["reason"]
    assert coverage["matmul"]["status"] == "verified"
    quantized = dbg.get_nondebug_quantized_model()
    (node,) = [n for n in quantized.graph.node if n.op_type == kind]
    for attr in node.attribute:
        for body in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            ops = {n.op_type for n in body.node}
            assert not ops & {"QuantizeLinear", "DequantizeLinear"}, f"{kind} body {attr.name} was quantized: {ops}"
    assert_matches_reference(dbg, feeds)


def test_samples_of_a_branching_model_are_never_stacked(rng: np.random.Generator) -> None:
    """An If decides once for a stacked batch: the first two samples agree, the third takes the other branch."""
    model = hostile.with_subgraph(rng, "If")
    feeds = [{"input": rng.standard_normal((1, 4)).astype(np.float32) + shift} for shift in (3.0, 3.0, -3.0, 3.0)]
    dbg = debugger(model, feeds, debug_options=qd.DebugOptions(batch_size=4))
    assert_matches_reference(dbg, feeds)
    calibration = qd.calibrate(model, dataset(feeds))
    one_by_one = qd.calibrate(model, dataset(feeds[:1])).merge(qd.calibrate(model, dataset(feeds[1:2])))
    for more in feeds[2:]:
        one_by_one = one_by_one.merge(qd.calibrate(model, dataset([more])))
    assert calibration.stats == one_by_one.stats


# -- names -------------------------------------------------------------------------------------------


def test_repeated_empty_and_colliding_names_get_unique_rows(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng)
    names = ["", "same", "same", "Conv_0", "", "same"]  # an empty first Conv would be "Conv_0": it must not clash
    for node, name in zip(model.graph.node, names):
        node.name = name
    feeds = feeds_for(model, rng)
    dbg = debugger(model, feeds)
    pre_names = [n.name for n in dbg.float_model.graph.node]
    assert all(pre_names) and len(set(pre_names)) == len(pre_names)
    dbg.run()
    rows = [r.node_name for r in dbg.layer_rows]
    assert all(rows) and len(set(rows)) == len(rows)
    with pytest.raises(qd.ConfigError, match=r"matches .* nodes"):
        dbg.options = qd.DebugOptions(denylisted_nodes=["same"])
    dbg.options = qd.DebugOptions(denylisted_nodes=[rows[0]])
    dbg.run()
    assert rows[0] not in [r.node_name for r in dbg.layer_rows]


def test_non_tensor_graph_input_is_refused_by_name(rng: np.random.Generator) -> None:
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["seq", "pos"], ["y"], name="at")],
        "g",
        [seq],
        [out],
        [numpy_helper.from_array(np.array(0, np.int64), "pos")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=models.IR_VERSION)
    with pytest.raises(qd.QuantDebugError, match="'seq' is not a tensor"):
        qd.QuantizationDebugger(model, [[np.zeros(3, np.float32)]])


# -- over 2 GB for real ---------------------------------------------------------------------------------


def _write_big_model(folder: Path, rng: np.random.Generator) -> Path:
    """``matmul_gemm`` plus 2.1 GB of weights in external data (a sparse file: nothing is written to disk).

    Three 700 MB weights are each summed over axes computed from the input (always ``[0]``, but no
    optimizer can know it, so nothing is constant-folded away) into a ``padding_sum[1]`` side
    output. ReduceSum and Sum are not quantized, so the quantized and debug models keep the
    2.1 GB of float weights too, and each run reads them all.
    """
    model = models.matmul_gemm(rng)
    folder.mkdir(parents=True)
    count = 700 * 2**20 // 4
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(3 * count * 4)
    for i in range(3):
        tensor = onnx.TensorProto(name=f"padding{i}", data_type=TensorProto.FLOAT, dims=[count])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(i * count * 4)), ("length", str(count * 4))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        model.graph.initializer.append(tensor)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "one_dim"))
    model.graph.node.extend(
        [
            helper.make_node("ReduceMax", ["input"], ["pad_top"], name="pad_top", keepdims=0),
            helper.make_node("Less", ["pad_top", "pad_top"], ["pad_never"], name="pad_never"),  # False, even for NaN
            helper.make_node("Cast", ["pad_never"], ["pad_zero"], name="pad_zero", to=TensorProto.INT64),
            helper.make_node("Reshape", ["pad_zero", "one_dim"], ["pad_axes"], name="pad_axes"),
            *(
                helper.make_node("ReduceSum", [f"padding{i}", "pad_axes"], [f"pad_sum{i}"], name=f"pad_sum{i}")
                for i in range(3)
            ),
            helper.make_node("Sum", ["pad_sum0", "pad_sum1", "pad_sum2"], ["padding_sum"], name="pad_sum"),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info("padding_sum", TensorProto.FLOAT, [1]))
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_model_over_2gb_given_as_bytes_is_refused_clearly(rng: np.random.Generator, tmp_path: Path) -> None:
    """Without its folder a model's external data cannot be read; with its weights inside, it cannot be parsed."""
    path = _write_big_model(tmp_path / "big", rng)
    with pytest.raises(qd.ModelError, match=r"external file 'weights.bin'.*pass the model's path"):
        debugger(path.read_bytes(), feeds_for(models.matmul_gemm(rng), rng))


@pytest.mark.slow
def test_model_over_2gb_debugs_from_a_path_with_external_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _write_big_model(tmp_path / "big", rng)
    feeds = [models.input_feed(models.matmul_gemm(rng), rng) for _ in range(2)]
    dbg = debugger(path, feeds)
    dbg.run()
    assert dbg.layer_statistics
    with pytest.raises(ModelTooLargeError, match="save_nondebug_quantized_model"):
        dbg.get_nondebug_quantized_model()
    out = tmp_path / "q" / "model.int8.onnx"
    dbg.save_nondebug_quantized_model(out)
    assert (out.parent / (out.name + ".data")).is_file()
    assert os.path.getsize(out) < 2**31
    assert os.path.getsize(out.parent / (out.name + ".data")) > 2**31
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    outputs = session.run(["padding_sum"], feeds[0])
    np.testing.assert_array_equal(outputs[0], np.zeros(1, np.float32))
