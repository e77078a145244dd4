"""Sanity checks of the test-model library (tests/models.py) and the references (tests/reference.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from tests import models
from tests.reference import dequantize_ref, quantize_ref, run_all_tensors, tflite_metrics

NAMED_BUILDERS = sorted(set(models.ALL_MODELS) - {"unnamed_nodes", "duplicate_names"})


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(v) for v in _session(model).run(None, dict(feed))]


def _uniquify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``model`` with node names made unique (``name__i``)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, node in enumerate(out.graph.node):
        node.name = f"{node.name}__{i}"
    return out


def _build(name: str, rng: np.random.Generator) -> onnx.ModelProto:
    return models.ALL_MODELS[name](rng)


# ---------------------------------------------------------------- builders


@pytest.mark.parametrize("name", sorted(models.ALL_MODELS))
def test_builder_is_valid_and_runs(name: str, rng: np.random.Generator) -> None:
    model = _build(name, rng)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == models.IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", models.DEFAULT_OPSET)]
    for inp in model.graph.input:
        assert inp.type.tensor_type.shape.dim[0].dim_param == "N"
        assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    if name == "duplicate_names":
        with pytest.raises(Exception, match="same node name"):
            _session(model)
        model = _uniquify(model)
    for batch in (1, 3):
        outs = _run(model, models.input_feed(model, rng, batch))
        assert len(outs) == len(model.graph.output)
        for out in outs:
            assert out.dtype == np.float32
            assert out.shape[0] == batch
            assert np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMED_BUILDERS)
def test_node_names_unique_and_distinct_from_tensors(name: str, rng: np.random.Generator) -> None:
    model = _build(name, rng)
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    tensors = {o for n in model.graph.node for o in n.output}
    assert not set(names) & tensors


def test_unnamed_and_duplicate_names(rng: np.random.Generator) -> None:
    assert all(n.name == "" for n in models.unnamed_nodes(rng).graph.node)
    counts = Counter(n.name for n in models.duplicate_names(rng).graph.node)
    assert counts["conv"] == 3 and counts["act"] == 3


def test_wide_range_builder_valid(rng: np.random.Generator) -> None:
    model, bad = models.wide_range_node(rng)
    assert bad == "scale_up" and bad in {n.name for n in model.graph.node}
    onnx.checker.check_model(model, full_check=True)
    for batch in (1, 3):
        (out,) = _run(model, models.input_feed(model, rng, batch))
        assert out.shape == (batch, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(set(models.ALL_MODELS) - models.BATCH_MIXING_MODELS - {"duplicate_names"}))
def test_batch_equals_single_runs(name: str, rng: np.random.Generator) -> None:
    model = _build(name, rng)
    singles = [models.input_feed(model, rng, 1) for _ in range(3)]
    batched = {k: np.concatenate([f[k] for f in singles]) for k in singles[0]}
    got = _run(model, batched)
    want = [np.concatenate(parts) for parts in zip(*(_run(model, f) for f in singles), strict=True)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_reshape_mixes_batch(rng: np.random.Generator) -> None:
    model = models.reshape_mixes_batch(rng)
    singles = [models.input_feed(model, rng, 1) for _ in range(3)]
    (batched,) = _run(model, {"input": np.concatenate([f["input"] for f in singles])})
    per_sample = np.concatenate([_run(model, f)[0] for f in singles])
    assert batched.shape == per_sample.shape == (3, 4, 8, 8)
    for i in range(3):
        assert not np.allclose(batched[i], per_sample[i], rtol=1e-3, atol=0.0)
    np.testing.assert_allclose(batched.sum(), 1.0, rtol=1e-4)  # one softmax over the whole batch


@pytest.mark.parametrize("opset", [14, 21])
@pytest.mark.parametrize("name", ["all_ops", "attention_mask_sentinel", "multi_io", "reshape_mixes_batch"])
def test_other_opsets(name: str, opset: int, rng: np.random.Generator) -> None:
    model = models.ALL_MODELS[name](rng, opset=opset)  # type: ignore[call-arg]
    onnx.checker.check_model(model, full_check=True)
    assert all(np.isfinite(o).all() for o in _run(model, models.input_feed(model, rng, 2)))


def test_opset_too_low_for_hardswish(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="opset"):
        models.mobilenetv3_block(rng, opset=13)


def test_static_batch(rng: np.random.Generator) -> None:
    model = models.conv_relu(rng, batch=2)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert _run(model, models.input_feed(model, rng, batch=7))[0].shape == (2, 10)


def test_multi_io_feed(rng: np.random.Generator) -> None:
    model = models.multi_io(rng)
    feed = models.input_feed(model, rng, batch=4)
    assert {k: v.shape for k, v in feed.items()} == {"image": (4, 3, 8, 8), "features": (4, 5)}
    logits, fmap = _run(model, feed)
    assert logits.shape == (4, 4) and fmap.shape == (4, 8, 8, 8)


def test_attention_mask_input_feed(rng: np.random.Generator) -> None:
    model = models.ALL_MODELS["attention_mask_input"](rng)
    mask = models.input_feed(model, rng, batch=2)[models.ATTENTION_MASK_INPUT]
    assert mask.shape == (2, 8, 8) and mask.dtype == np.float32
    assert mask[0, 0, 1] == np.float32(-3.4028235e38) and mask[1, 3, 3] == 0.0


def test_model_coverage(rng: np.random.Generator) -> None:
    ops = {n.op_type for n in models.all_ops(rng).graph.node}
    assert ops >= {"Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool"}
    assert ops >= {"Relu", "Clip", "Sigmoid", "Softmax", "HardSwish", "HardSigmoid", "Flatten"}
    convs = [n for n in models.all_ops(rng).graph.node if n.op_type == "Conv"]
    assert any(a.name == "group" and a.i > 1 for n in convs for a in n.attribute)


# ---------------------------------------------------------------- reference: run_all_tensors


def test_run_all_tensors_exposes_everything(rng: np.random.Generator) -> None:
    model = models.all_ops(rng)
    feed = models.input_feed(model, rng, batch=2)
    tensors = run_all_tensors(model, feed)
    assert set(tensors) == {"input"} | {o for n in model.graph.node for o in n.output}
    # the default session fuses (e.g. Conv+Relu), so only close, not bit-equal, to the unoptimized run
    np.testing.assert_allclose(tensors["output"], _run(model, feed)[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(tensors["relu1_out"], np.maximum(tensors["conv1_out"], 0))
    np.testing.assert_array_equal(tensors["concat_out"], np.concatenate([tensors["add_out"], tensors["mul_out"]], 1))
    np.testing.assert_allclose(tensors["output"].sum(-1), 1.0, rtol=1e-5)


def test_run_all_tensors_attention_sentinel(rng: np.random.Generator) -> None:
    model = models.attention_mask_sentinel(rng)
    tensors = run_all_tensors(model, models.input_feed(model, rng, batch=2))
    masked = np.triu(np.ones((8, 8), dtype=bool), k=1)
    assert np.isfinite(tensors["mask_add_out"]).all()
    assert (tensors["mask_add_out"][:, masked] < -3e38).all()
    assert (tensors["softmax_out"][:, masked] == 0.0).all()


def test_run_all_tensors_unnamed_nodes(rng: np.random.Generator) -> None:
    model = models.unnamed_nodes(rng)
    tensors = run_all_tensors(model, models.input_feed(model, rng))
    assert {"conv1_out", "relu1_out", "clip1_out", "output"} <= set(tensors)


# ---------------------------------------------------------------- reference: quantize / dequantize

_QTYPES = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8, np.int16: TensorProto.INT16}


def _qdq_model(op: str, shape: tuple[int, ...], scale: np.ndarray, zp: np.ndarray, axis: int | None) -> onnx.ModelProto:
    """One-node QuantizeLinear/DequantizeLinear model at opset 21 (int16 needs >= 21)."""
    qtype = _QTYPES[zp.dtype.type]
    in_t, out_t = (TensorProto.FLOAT, qtype) if op == "QuantizeLinear" else (qtype, TensorProto.FLOAT)
    node = helper.make_node(op, ["x", "scale", "zp"], ["y"], name="node")
    if axis is not None:
        node.attribute.append(helper.make_attribute("axis", axis))
    graph = helper.make_graph(
        [node],
        "qdq",
        [helper.make_tensor_value_info("x", in_t, list(shape))],
        [helper.make_tensor_value_info("y", out_t, list(shape))],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(zp, "zp")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=models.IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def _qdq_data(
    rng: np.random.Generator, dtype: type[np.integer], shape: tuple[int, ...], axis: int | None, pow2: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random x, scale, zero point; with ``pow2`` scales are powers of two and x holds exact ties."""
    info = np.iinfo(dtype)
    n = 1 if axis is None else shape[axis]
    span = float(info.max) - float(info.min)
    if pow2:
        scale = np.exp2(rng.integers(-8, 2, size=n)).astype(np.float32)
    else:
        scale = rng.uniform(0.5, 2.0, size=n).astype(np.float32) * np.float32(4.0 / span)
    zp = rng.integers(info.min, info.max, size=n, endpoint=True).astype(dtype)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = n
    s = scale.reshape(bshape)
    # codes around and beyond the representable range (saturation), half of them exact ties
    k = rng.integers(int(-0.75 * span), int(0.75 * span), size=shape).astype(np.float32)
    tie = np.where(rng.random(shape) < 0.5, np.float32(0.5), rng.uniform(-0.5, 0.5, size=shape).astype(np.float32))
    x = ((k + tie) * s).astype(np.float32)
    x.flat[: min(4, x.size)] = [1e30, -1e30, 0.0, -0.0][: min(4, x.size)]
    return x, scale, zp


@pytest.mark.parametrize("pow2", [True, False], ids=["ties", "random_scale"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16], ids=lambda d: d.__name__)
def test_quantize_dequantize_ref_bit_exact(
    dtype: type[np.integer], axis: int | None, pow2: bool, rng: np.random.Generator
) -> None:
    shape = (3, 4, 5, 6)
    x, scale, zp = _qdq_data(rng, dtype, shape, axis, pow2)
    (q_ort,) = _run(_qdq_model("QuantizeLinear", shape, scale, zp, axis), {"x": x})
    q_ref = quantize_ref(x, scale, zp, dtype, axis=axis)
    assert q_ref.dtype == q_ort.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(q_ref, q_ort)
    info = np.iinfo(dtype)
    assert (q_ref == info.max).any() and (q_ref == info.min).any()  # saturation exercised
    (x_ort,) = _run(_qdq_model("DequantizeLinear", shape, scale, zp, axis), {"x": q_ort})
    x_ref = dequantize_ref(q_ort, scale, zp, axis=axis)
    assert x_ref.dtype == np.float32
    np.testing.assert_array_equal(x_ref, x_ort)


def test_quantize_ref_rounds_half_to_even() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize_ref(x, 1.0, 0, np.int8), [0, 2, 2, 0, -2, -2, 127, -128])
    np.testing.assert_array_equal(quantize_ref(x, 1.0, 10, np.uint8), [10, 12, 12, 10, 8, 8, 255, 0])
    np.testing.assert_array_equal(dequantize_ref(np.array([0, 255], np.uint8), 0.5, 10), [-5.0, 122.5])


# ---------------------------------------------------------------- reference: TFLite metrics


def test_tflite_metrics_hand_computed() -> None:
    diffs = [np.array([1.0, -1.0, 2.0, 0.0], np.float32), np.array([[3.0]]), np.array([np.nan, 1.0])]
    got = tflite_metrics(diffs)
    # sample 0: mean 0.5, var (0.25+2.25+2.25+0.25)/4 = 1.25, max|.| 2, mse 6/4; sample 1: 3, 0, 3, 9;
    # sample 2 is NaN for every metric but num_elements, so nanmean skips it there.
    assert got == pytest.approx(
        {
            "num_elements": (4 + 1 + 2) / 3,
            "stddev": np.sqrt(1.25) / 2,
            "mean_error": (0.5 + 3.0) / 2,
            "max_abs_error": (2.0 + 3.0) / 2,
            "mean_squared_error": (1.5 + 9.0) / 2,
        },
        rel=1e-12,
    )
    assert list(got) == ["num_elements", "stddev", "mean_error", "max_abs_error", "mean_squared_error"]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    )
)
def test_tflite_metrics_variance_identity(diff: np.ndarray) -> None:
    m = tflite_metrics([diff])
    lhs, rhs = m["stddev"] ** 2, m["mean_squared_error"] - m["mean_error"] ** 2
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9 * max(m["mean_squared_error"], 1e-300))
    assert m["num_elements"] == diff.size
    assert m["max_abs_error"] ** 2 >= m["mean_squared_error"] * (1 - 1e-12)


# ---------------------------------------------------------------- wide_range_node really breaks int8


class _Reader(CalibrationDataReader):
    """CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _quantize(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], folder: Path, exclude: list[str]
) -> onnx.ModelProto:
    folder.mkdir()
    src, dst = folder / "float.onnx", folder / "int8.onnx"
    onnx.save(model, src)
    quantize_static(
        src,
        dst,
        _Reader(feeds),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=exclude,
    )
    return onnx.load(dst)


def test_wide_range_node_breaks_int8(rng: np.random.Generator, tmp_path: Path) -> None:
    model, bad = models.wide_range_node(rng)
    calib = [models.input_feed(model, rng, batch=4) for _ in range(4)]
    test = models.input_feed(model, rng, batch=16)
    (ref,) = _run(model, test)
    q_all = _quantize(model, calib, tmp_path / "all", exclude=[])
    q_ok = _quantize(model, calib, tmp_path / "excluded", exclude=[bad])
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == f"{bad}_out" for n in q_all.graph.node)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == f"{bad}_out" for n in q_ok.graph.node)
    power = float(np.mean(ref.astype(np.float64) ** 2))
    mse_all = float(np.mean((_run(q_all, test)[0] - ref) ** 2.0))
    mse_ok = float(np.mean((_run(q_ok, test)[0] - ref) ** 2.0))
    assert mse_all > 0.1 * power, (mse_all, power)  # the signal is largely destroyed
    assert mse_ok < 0.05 * power, (mse_ok, power)  # excluding the one node restores int8
    assert mse_all > 10.0 * mse_ok, (mse_all, mse_ok)  # typically 100-10000x
