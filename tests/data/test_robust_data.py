"""Broken data: every bad sample is a DatasetError naming the dataset, the sample index and the input."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tests import hostile, models
from tests.helpers import assert_metrics_close, dataset, reference_statistics

import quantdebug as qd
from quantdebug.data._dataset import batches
from quantdebug.errors import RunInterrupted

IMAGE = (1, 3, 16, 16)


def good() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(IMAGE).astype(np.float32)


def bad_at(index: int, bad: object, n: int = 4) -> list[object]:
    """``n`` good one-input samples with ``bad`` at ``index``."""
    return [bad if i == index else [good()] for i in range(n)]


def with_nan() -> np.ndarray:
    x = good()
    x[0, 1, 2, 3] = np.nan
    return x


def with_inf() -> np.ndarray:
    x = good()
    x[0, 0, 5, 5] = -np.inf
    return x


BAD_SAMPLES: dict[str, tuple[object, str]] = {
    "too_many_arrays": ([good(), good()], r"sample 2 has 2 arrays but the model has 1 input \(input"),
    "wrong_name": ({"image": good()}, r"sample 2: input names do not match.*unknown \['image'\].*missing \['input'\]"),
    "missing_batch_axis": ([good()[0]], r"sample 2, input 'input': shape \[3, 16, 16\] has rank 3.*add the batch axis"),
    "wrong_rank": ([good()[None]], r"sample 2, input 'input': shape \[1, 1, 3, 16, 16\] has rank 5"),
    "wrong_shape": ([np.zeros((1, 3, 8, 16), np.float32)], r"sample 2, input 'input': shape \[1, 3, 8, 16\].*axis 2"),
    "wrong_dtype": ([good().astype(np.int32)], r"sample 2, input 'input': dtype int32 does not match.*float32"),
    "strings": ([np.full(IMAGE, "x")], r"sample 2, input 'input': dtype <U1 does not match"),
    "python_objects": ([np.array([object()] * 3)], r"sample 2, input 'input': holds Python objects"),
    "ragged": ([[[1.0, 2.0], [3.0]]], r"sample 2, input 'input': cannot be turned into an array"),
    "nan": ([with_nan()], r"sample 2, input 'input': contains 1 non-finite values \(1 NaN, 0 Inf\).*\[0, 1, 2, 3\]"),
    "inf": ([with_inf()], r"sample 2, input 'input': contains 1 non-finite values \(0 NaN, 1 Inf\).*\[0, 0, 5, 5\]"),
    "overflows_float32": ([np.full(IMAGE, 1e300)], r"sample 2, input 'input': values up to 1e\+300 overflow .*float32"),
    "empty_array": (
        [np.zeros((0, 3, 16, 16), np.float32)],
        r"sample 2, input 'input': is empty \(shape \[0, 3, 16, 16\]\)",
    ),
    "none": (None, r"sample 2 is a NoneType"),
    "string_sample": ("input.npy", r"sample 2 is a str"),
}


@pytest.fixture(scope="module")
def conv() -> onnx.ModelProto:
    return models.conv_relu(np.random.default_rng(5))


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
@pytest.mark.parametrize("role", ["representative_dataset", "debug_dataset"])
def test_bad_sample_names_dataset_sample_and_input(case: str, role: str, conv: onnx.ModelProto) -> None:
    bad, pattern = BAD_SAMPLES[case]
    samples = bad_at(2, bad)
    good_data = [[good()] for _ in range(3)]
    kwargs = (
        {"representative_dataset": samples, "debug_dataset": good_data}
        if role == "representative_dataset"
        else {"representative_dataset": good_data, "debug_dataset": samples}
    )
    with pytest.raises(qd.QuantDebugError) as info:
        dbg = qd.QuantizationDebugger(conv, kwargs.pop("representative_dataset"), **kwargs)  # type: ignore[arg-type]
        dbg.run()
    error: BaseException | None = info.value
    if isinstance(error, RunInterrupted):  # a debug run keeps the samples before the bad one and says so
        assert "stopped after 2 samples" in str(error) and "DatasetError" in str(error)
        error = error.__cause__
    assert isinstance(error, qd.DatasetError), repr(error)
    message = str(error)
    assert re.search(pattern, message), message
    assert message.startswith(role) and "\n" not in message


def test_integer_input_values_that_do_not_fit_are_refused() -> None:
    from quantdebug.data._dataset import Dataset, InputSpec

    spec = InputSpec("ids", np.dtype(np.int32), ("N", 4))
    ok = Dataset([[np.arange(4, dtype=np.int64)[None]]], [spec], what="data")
    assert next(iter(ok))["ids"].dtype == np.int32
    too_big = Dataset([[np.full((1, 4), 2**40, np.int64)]], [spec], what="data")
    with pytest.raises(
        qd.DatasetError, match=r"data sample 0, input 'ids': values 1099511627776\.\.1099511627776 do not fit"
    ):
        next(iter(too_big))


def test_empty_dataset_is_a_clear_error(conv: onnx.ModelProto) -> None:
    empties: list[object] = [[], lambda: iter([]), lambda: []]
    for empty in empties:
        with pytest.raises(qd.DatasetError, match="representative_dataset is empty: it yielded no samples"):
            qd.QuantizationDebugger(conv, empty)  # type: ignore[arg-type]


def test_generator_raising_midway_names_the_sample_index(conv: onnx.ModelProto) -> None:
    def data() -> Iterator[list[np.ndarray]]:
        yield [good()]
        yield [good()]
        yield [good()]
        raise OSError("the network share went away")

    with pytest.raises(
        qd.DatasetError, match=r"reading sample 3 raised OSError\('the network share went away'\)"
    ) as info:
        qd.QuantizationDebugger(conv, data)
    assert isinstance(info.value.__cause__, OSError)


def test_dataset_function_that_raises_is_named(conv: onnx.ModelProto) -> None:
    def data() -> list[object]:
        raise KeyError("no such split")

    with pytest.raises(qd.DatasetError, match="calling the dataset function failed: KeyError"):
        qd.QuantizationDebugger(conv, data)


def test_one_shot_generator_object_is_refused(conv: onnx.ModelProto) -> None:
    def data() -> Iterator[list[np.ndarray]]:
        yield [good()]

    with pytest.raises(qd.DatasetError, match=r"one-shot iterator/generator.*pass the generator function itself"):
        qd.QuantizationDebugger(conv, data())


@pytest.mark.parametrize(
    ("source", "pattern"), [(42, "got int"), ("samples.npz", "got str"), ({"input": 1}, "got dict")]
)
def test_dataset_of_the_wrong_kind_is_refused(source: object, pattern: str, conv: onnx.ModelProto) -> None:
    with pytest.raises(qd.DatasetError, match=pattern):
        qd.QuantizationDebugger(conv, source)


def test_dataset_function_returning_a_non_iterable_is_refused(conv: onnx.ModelProto) -> None:
    with pytest.raises(qd.DatasetError, match="returned int, which is not iterable"):
        qd.QuantizationDebugger(conv, lambda: 3)


def test_wrong_count_and_names_on_a_two_input_model() -> None:
    rng = np.random.default_rng(2)
    model = models.multi_io(rng)
    feed = models.input_feed(model, rng)
    with pytest.raises(qd.DatasetError, match=r"sample 0 has 1 array but the model has 2 inputs \(image .*features"):
        qd.QuantizationDebugger(model, [[feed["image"]]])
    with pytest.raises(qd.DatasetError, match=r"unknown \['feature'\], missing \['features'\]"):
        qd.QuantizationDebugger(model, [{"image": feed["image"], "feature": feed["features"]}])
    swapped = [[feed["features"], feed["image"]]]
    with pytest.raises(qd.DatasetError, match="input 'image': shape \\[1, 5\\] has rank 2"):
        qd.QuantizationDebugger(model, swapped)


# -- shapes that change from sample to sample -----------------------------------------------------------


def _mixed_sizes(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    sizes = [(16, 16)] * 3 + [(12, 20)] * 2 + [(16, 16)] * 2 + [(9, 7)] + [(12, 20)] * 3
    return [{"input": rng.standard_normal((1, 3, h, w)).astype(np.float32)} for h, w in sizes]


def test_batching_restarts_at_each_shape_change() -> None:
    feeds = _mixed_sizes(np.random.default_rng(0))
    groups = list(batches(iter(feeds), 4, True))
    assert [n for _, n in groups] == [3, 2, 2, 1, 3]
    assert sum(n for _, n in groups) == len(feeds)
    rebuilt = [f["input"][i : i + 1] for f, n in groups for i in range(n)]
    for got, want in zip(rebuilt, feeds):
        np.testing.assert_array_equal(got, want["input"])


def test_samples_changing_shape_between_batches_equal_an_unbatched_run(rng: np.random.Generator) -> None:
    model = hostile.dynamic_spatial(rng)
    feeds = _mixed_sizes(rng)
    results = {}
    for size in (1, 4):
        dbg = qd.QuantizationDebugger(
            model,
            dataset(feeds),
            calibration=qd.calibrate(model, dataset(feeds), batch_size=size),
            debug_options=qd.DebugOptions(batch_size=size),
        )
        dbg.run()
        assert dbg.samples_seen == len(feeds)
        results[size] = dbg.layer_statistics
    single, batched = results[1], results[4]
    assert single.keys() == batched.keys()
    for tensor in single:
        for metric, value in single[tensor].items():
            assert batched[tensor][metric] == pytest.approx(value, rel=1e-4, abs=1e-8), (tensor, metric)
    reference = reference_statistics(dbg, feeds)
    for tensor, want in reference.items():
        assert_metrics_close(batched[tensor], want, tensor)


def test_calibration_batched_over_shape_changes_equals_unbatched(rng: np.random.Generator) -> None:
    model = hostile.dynamic_spatial(rng)
    feeds = _mixed_sizes(rng)
    one = qd.calibrate(model, dataset(feeds), batch_size=1)
    many = qd.calibrate(model, dataset(feeds), batch_size=16)
    assert one.num_samples == many.num_samples == len(feeds)
    for name in one.stats:
        assert one.tensor_range(name, "minmax") == pytest.approx(many.tensor_range(name, "minmax"), rel=1e-5, abs=1e-6)


# -- zero-width calibration ranges -------------------------------------------------------------------------


def _assert_finite_run(dbg: qd.QuantizationDebugger) -> None:
    dbg.run()
    assert dbg.layer_rows
    for row in dbg.layer_rows:
        assert row.scale > 0 and math.isfinite(row.scale), row
        assert all(math.isfinite(v) for v in row.metrics.values()), row
        assert math.isfinite(row.rmse_over_scale), row


@pytest.mark.parametrize("per_channel", [False, True])
def test_all_zero_input_has_zero_width_range_without_division_by_zero(per_channel: bool) -> None:
    model = models.conv_relu(np.random.default_rng(1))
    zeros = [[np.zeros(IMAGE, np.float32)] for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a division by zero in numpy would raise here
        calibration = qd.calibrate(model, zeros)
        assert calibration.tensor_range("input", "minmax") == (0.0, 0.0)
        for method in ("minmax", "percentile", "entropy"):
            dbg = qd.QuantizationDebugger(
                model, zeros, quant_config=qd.QuantConfig(per_channel=per_channel, calibration_method=method)
            )
            _assert_finite_run(dbg)


@pytest.mark.parametrize("per_channel", [False, True])
def test_constant_intermediate_tensor_and_zero_weights_run_without_division_by_zero(per_channel: bool) -> None:
    rng = np.random.default_rng(4)
    model = models.conv_relu(rng)
    for init in model.graph.initializer:
        if init.name in ("conv2.weight", "conv2.bias"):  # conv2 and clip1 then output a constant 0
            init.CopyFrom(numpy_helper.from_array(np.zeros(numpy_helper.to_array(init).shape, np.float32), init.name))
        if init.name == "conv1.weight":  # one output channel of zeros: a zero-width per-channel weight range
            w = numpy_helper.to_array(init).copy()
            w[0] = 0.0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        dbg = qd.QuantizationDebugger(model, dataset(feeds), quant_config=qd.QuantConfig(per_channel=per_channel))
        _assert_finite_run(dbg)
    assert dbg.calibration is not None
    assert dbg.calibration.tensor_range("clip1_out", "minmax") == (0.0, 0.0)
    row = next(r for r in dbg.layer_rows if r.node_name == "conv2")
    assert row.metrics["max_abs_error"] == 0.0
    reference = reference_statistics(dbg, feeds)
    for tensor, want in reference.items():
        assert_metrics_close(dbg.layer_statistics[tensor], want, tensor)


def test_constant_nonzero_input_range_runs() -> None:
    model = models.matmul_gemm(np.random.default_rng(6))
    fives = [[np.full((1, 16), 5.0, np.float32)] for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _assert_finite_run(qd.QuantizationDebugger(model, fives))


def test_dead_relu_with_zero_width_range_still_clamps_at_zero() -> None:
    rng = np.random.default_rng(4)
    model = models.conv_relu(rng)
    for init in model.graph.initializer:
        if init.name == "conv3.bias":  # conv3's pre-activation is negative everywhere: relu2 outputs only zeros
            init.CopyFrom(numpy_helper.from_array(np.full(16, -100.0, np.float32), init.name))
    feeds = [models.input_feed(model, rng) for _ in range(3)]
    dbg = qd.QuantizationDebugger(model, dataset(feeds))
    assert dbg.calibration is not None and dbg.calibration.tensor_range("relu2_out", "minmax") == (0.0, 0.0)
    dbg.run()
    row = next(r for r in dbg.layer_rows if r.tensor_name == "relu2_out")
    assert row.metrics["max_abs_error"] == 0.0, f"quantized relu2_out is off by {row.metrics['max_abs_error']}"
