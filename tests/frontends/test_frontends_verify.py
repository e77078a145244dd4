"""verify_conversion, the batch check, convert's recognition and the light import, on numpy references only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantdebug as qd
from quantdebug.frontends import ConversionError, convert, framework_of, verify_conversion
from quantdebug.frontends._batch import batch_problem

_ROOT = Path(__file__).resolve().parents[2]


def linear_model(weight: np.ndarray, *, batch: int | str = "batch", second_output: bool = False) -> onnx.ModelProto:
    """y = x @ W (+ an integer argmax output); x is [batch, k]."""
    k, n = weight.shape
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])]
    if second_output:
        nodes.append(helper.make_node("ArgMax", ["y"], ["label"], name="argmax", axis=1, keepdims=0))
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, [batch]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
        outputs,
        [numpy_helper.from_array(weight.astype(np.float32), "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference(weight: np.ndarray, second_output: bool = False):  # type: ignore[no-untyped-def]
    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        y = arrays[0].astype(np.float64) @ weight.astype(np.float64)
        return [y, y.argmax(1)] if second_output else [y]

    return run


def test_agreeing_conversion_reports_each_output(rng: np.random.Generator) -> None:
    w = rng.normal(size=(6, 4)).astype(np.float32)
    samples = [rng.normal(size=(1, 6)).astype(np.float32) for _ in range(3)]
    report = verify_conversion(reference(w, True), linear_model(w, second_output=True), samples)
    assert report.ok and report.samples == 3
    assert [o.name for o in report.outputs] == ["y", "label"]
    y = report.outputs[0]
    # independent: the tolerance is 1e-4 * (1 + max|ref|) with the defaults
    worst_ref = max(float(np.abs(s.astype(np.float64) @ w).max()) for s in samples)
    assert y.tolerance <= 1e-4 * (1 + worst_ref) + 1e-12
    assert y.max_abs_diff < 1e-5
    assert report.outputs[1].tolerance == 0.0  # integer outputs must be equal
    assert "max|onnx - original model| <= 0.0001 + 0.0001 * max|original model|" in str(report)


def test_disagreement_names_output_diff_and_tolerance(rng: np.random.Generator) -> None:
    w = rng.normal(size=(6, 4)).astype(np.float32)
    broken = w.copy()
    broken[0, 0] += 0.5  # a damaged weight
    x = np.ones((1, 6), np.float32)
    with pytest.raises(ConversionError) as info:
        verify_conversion(reference(w), linear_model(broken), [x], reference="torch module")
    message = str(info.value)
    assert "output 'y'" in message and "max abs diff 0.5" in message and "tolerance" in message
    assert "torch module" in message
    assert isinstance(info.value, qd.ModelError)
    report = verify_conversion(reference(w), linear_model(broken), [x], raise_on_mismatch=False)
    assert not report.ok and report.failed[0].name == "y"
    assert report.failed[0].max_abs_diff == pytest.approx(0.5, abs=1e-5)


def test_tolerances_are_honoured(rng: np.random.Generator) -> None:
    w = rng.normal(size=(3, 2)).astype(np.float32)
    broken = w + np.float32(1e-3)
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ConversionError):
        verify_conversion(reference(w), linear_model(broken), [x])
    assert verify_conversion(reference(w), linear_model(broken), [x], atol=1e-2).ok


def test_output_count_and_shape_mismatch_are_errors(rng: np.random.Generator) -> None:
    w = rng.normal(size=(3, 2)).astype(np.float32)
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ConversionError, match="1 output"):
        verify_conversion(reference(w, True), linear_model(w), [x])
    with pytest.raises(ConversionError, match="shape"):
        verify_conversion(lambda a: [np.zeros((1, 5))], linear_model(w), [x])
    with pytest.raises(ConversionError, match="no samples"):
        verify_conversion(reference(w), linear_model(w), [])


def test_nan_on_one_side_only_disagrees() -> None:
    w = np.eye(2, dtype=np.float32)
    x = np.array([[np.nan, 1.0]], np.float32)
    assert verify_conversion(lambda a: [a[0] @ w], linear_model(w), [x]).ok  # NaN on both sides
    with pytest.raises(ConversionError):
        verify_conversion(lambda a: [np.zeros((1, 2))], linear_model(w), [x])


def test_batch_check_accepts_row_independent_and_rejects_fixed_batch(rng: np.random.Generator) -> None:
    w = rng.normal(size=(4, 3)).astype(np.float32)
    x = rng.normal(size=(1, 4)).astype(np.float32)
    assert batch_problem(linear_model(w), {"x": x}, 1e-4, 1e-4) is None
    problem = batch_problem(linear_model(w, batch=1), {"x": x}, 1e-4, 1e-4)
    assert problem is not None and "batch of 2" in problem


def test_convert_returns_none_for_what_it_does_not_know(tmp_path: Path) -> None:
    w = np.eye(2, dtype=np.float32)
    assert convert(linear_model(w)) is None
    assert convert(str(tmp_path / "model.onnx")) is None
    assert convert(b"bytes") is None
    assert convert(object()) is None
    assert framework_of(tmp_path / "m.tflite") == "tflite"
    assert framework_of("m.KERAS") == "keras" and framework_of("m.h5") == "keras"


def test_frontends_do_not_import_frameworks_for_other_objects() -> None:
    code = (
        "import sys, quantdebug.frontends as f\n"
        "assert f.convert(object()) is None and f.convert('model.onnx') is None\n"
        "f.as_seed_dataset([[1.0]])\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)\n"
    )
    env_path = str(_ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r})\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
