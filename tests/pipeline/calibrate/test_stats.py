"""Calibration stats and ranges, checked against numpy on raw data and against onnxruntime's HistogramCollector."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnxruntime.quantization.calibrate import HistogramCollector
from tests.reference import bin_indices

from quantdebug.errors import CalibrationError
from quantdebug.pipeline.calibrate._ranges import _entropy_window, entropy_range, minmax_range, percentile_range
from quantdebug.pipeline.calibrate._stats import MANTISSA_BITS, NBINS, ZERO_BIN, TensorStats, bin_edges

F32_MAX = float(np.finfo(np.float32).max)
TINY = 2.0**-24


@pytest.fixture
def rng() -> np.random.Generator:
    seed = np.random.SeedSequence().entropy
    print(f"rng seed {seed}")  # shown by pytest when a test fails
    return np.random.default_rng(seed)


def stats_of(*batches: npt.ArrayLike) -> TensorStats:
    stats = TensorStats()
    for batch in batches:
        stats.update(batch)
    return stats


def nasty(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    """Values over the whole float32 range: normal, log-uniform magnitudes, specials and exact bin edges."""
    log_uniform = rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-40, 127.99, n)
    edges = bin_edges()[1:-1]
    on_edges = edges[(np.abs(edges) <= F32_MAX)].astype(np.float32)
    on_edges = rng.choice(on_edges, n // 4)
    specials = [0.0, -0.0, F32_MAX, -F32_MAX, TINY, -TINY, 1e-45, -1e-45, 1.0, -1.0, np.nan, np.inf, -np.inf]
    values = np.concatenate(
        [
            rng.standard_normal(n),
            log_uniform,
            on_edges,
            np.nextafter(on_edges, np.float32(np.inf)),
            np.nextafter(on_edges, np.float32(-np.inf)),
            np.nextafter(np.float32(TINY), np.float32(0)) * np.array([1, -1]),
            specials,
        ]
    ).astype(np.float32)
    return rng.permutation(values)


def reference_bins(values: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
    """Bins found by searching the edges; bins are closed on the side nearer zero."""
    v = values.astype(np.float64)
    edges = bin_edges()
    right = np.searchsorted(edges, v, side="right") - 1
    left = np.searchsorted(edges, v, side="left") - 1
    return np.where(v < 0, left, right)


# ---------------------------------------------------------------- counts, min, max, histogram


def test_bin_layout() -> None:
    edges = bin_edges()
    assert NBINS <= 40_000 and edges.shape == (NBINS + 1,) and edges.dtype == np.float64
    assert np.all(np.diff(edges) > 0)
    assert edges[ZERO_BIN] == -TINY and edges[ZERO_BIN + 1] == TINY
    assert edges[0] < -F32_MAX and edges[-1] > F32_MAX  # the -3.4e38 mask sentinel has a real bin
    lo, hi = np.abs(edges[ZERO_BIN + 1 : -1]), np.abs(edges[ZERO_BIN + 2 :])
    assert np.all((hi - lo) / lo <= 2.0**-MANTISSA_BITS)
    # The documented formula: the magnitude's bit pattern shifted right gives the bin, offset by the zero bin.
    v = np.array([TINY, 1.0, 3.0, F32_MAX], dtype=np.float32)
    raw = (v.view(np.int32) >> (23 - MANTISSA_BITS)) - (v[:1].view(np.int32) >> (23 - MANTISSA_BITS))
    assert np.array_equal(bin_indices(v), ZERO_BIN + 1 + raw)
    assert np.array_equal(bin_indices(-v), ZERO_BIN - 1 - raw)


def test_count_min_max_exact(rng: np.random.Generator) -> None:
    shapes = [(), (1,), (7, 3), (2, 3, 4, 5), (0,), (1000,), (3, 0, 2)]
    batches: list[np.ndarray] = []
    for dtype in (np.float32, np.float16, np.float64):
        for shape in shapes:
            size = int(np.prod(shape))
            with np.errstate(over="ignore"):  # float16 overflows to inf, which is wanted here
                batches.append(rng.choice(nasty(rng, 1000), size).astype(dtype).reshape(shape))
    batches.append(np.array([1e300, -1e300, 5e-320, np.nan], dtype=np.float64))  # beyond float32's range
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = stats_of(*batches)
    flat = np.concatenate([b.reshape(-1).astype(np.float64) for b in batches])
    finite = flat[np.isfinite(flat)]
    assert stats.count == finite.size and stats.nonfinite == flat.size - finite.size
    assert stats.minimum == finite.min() == -1e300 and stats.maximum == finite.max() == 1e300
    assert stats.hist.sum() == stats.count
    assert stats.hist[0] >= 1 and stats.hist[-1] >= 1  # the clipped +-1e300


@pytest.mark.parametrize("chunks", [1, 7])
def test_histogram_matches_edges(rng: np.random.Generator, chunks: int) -> None:
    values = nasty(rng, 20_000)
    stats = stats_of(*np.array_split(values, chunks))
    finite = values[np.isfinite(values)]
    assert stats.count == finite.size == stats.hist.sum()
    assert stats.minimum == finite.min() and stats.maximum == finite.max()
    expected = reference_bins(finite)
    assert np.array_equal(bin_indices(finite), expected)
    assert np.array_equal(stats.hist, np.bincount(expected, minlength=NBINS))
    assert np.all(bin_indices(np.array([np.nan, np.inf, -np.inf], dtype=np.float32)) == -1)


# ---------------------------------------------------------------- merging and serialization

float_arrays = hnp.arrays(
    dtype=hnp.floating_dtypes(sizes=(16, 32, 64)),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=16),
)


@settings(max_examples=60, deadline=None)
@given(data=float_arrays, split=st.floats(0.0, 1.0))
def test_merge_is_exact(data: npt.NDArray[np.floating], split: float) -> None:
    flat = data.reshape(-1)
    k = int(split * flat.size)
    whole = stats_of(data)
    a, b = stats_of(flat[:k]), stats_of(flat[k:])
    assert a.merge(b) == whole and b.merge(a) == whole
    assert whole.merge(TensorStats()) == whole
    text = json.dumps(whole.to_dict(), allow_nan=False)  # strict JSON: no Infinity for empty stats
    assert TensorStats.from_dict(json.loads(text)) == whole


def test_from_dict_rejects_other_layouts() -> None:
    good = stats_of(np.arange(5, dtype=np.float32)).to_dict()
    for key, value in [("version", 99), ("nbins", 3), ("hist_index", [NBINS]), ("hist_count", [1, 2])]:
        with pytest.raises(CalibrationError):
            TensorStats.from_dict({**good, key: value})
    with pytest.raises(CalibrationError):
        TensorStats.from_dict({k: v for k, v in good.items() if k != "count"})


# ---------------------------------------------------------------- percentile


def distributions(rng: np.random.Generator) -> dict[str, npt.NDArray[np.float32]]:
    # 100_003 samples keep the percentile ranks off integers, where rounding could pick a neighbour.
    n = 100_003
    outliers = rng.standard_normal(n)
    outliers[rng.choice(n, 5, replace=False)] = [1e4, -3e4, 2e4, 5e3, -1e4]
    return {
        "normal": (rng.standard_normal(n) * 0.3 + 1.0).astype(np.float32),
        "uniform": rng.uniform(-2.0, 5.0, n).astype(np.float32),
        "relu": np.maximum(rng.standard_normal(n), 0).astype(np.float32),
        "outliers": outliers.astype(np.float32),
        "laplace": rng.laplace(0.0, 1.0, n).astype(np.float32),
    }


def bin_width(value: float) -> float:
    b = int(reference_bins(np.array([value], dtype=np.float32))[0])
    return float(bin_edges()[b + 1] - bin_edges()[b])


def ort_thresholds(method: str, data: npt.NDArray[np.float32], **options: object) -> tuple[float, float]:
    opts: dict[str, object] = {"symmetric": False, "num_bins": 2048, "num_quantized_bins": 128, "percentile": 99.999}
    opts.update(options)
    collector = HistogramCollector(method=method, scenario="same", **opts)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
        collector.collect({"t": data})
        result = collector.compute_collection_result()["t"]
    return float(result[0]), float(result[1])


@pytest.mark.parametrize("percentile", [99.999, 99.99, 99.9, 99.0])
def test_percentile_matches_numpy_and_onnxruntime(rng: np.random.Generator, percentile: float) -> None:
    for name, x in distributions(rng).items():
        stats = stats_of(x)
        x64 = x.astype(np.float64)
        # Both we and onnxruntime take the first bin where the cumulative count reaches the rank: inverted_cdf.
        cut = (100.0 - percentile) / 2.0
        ref_lo, ref_hi = np.percentile(x64, [cut, 100.0 - cut], method="inverted_cdf")
        lo, hi = percentile_range(stats, percentile)
        assert abs(lo - ref_lo) <= bin_width(ref_lo), (name, lo, ref_lo)
        assert abs(hi - ref_hi) <= bin_width(ref_hi), (name, hi, ref_hi)
        assert x.min() <= lo <= hi <= x.max()
        # onnxruntime reports the lower edge of its bin (2048 equal bins), so it can sit one of its bins lower.
        ort_lo, ort_hi = ort_thresholds("percentile", x, percentile=percentile)
        ort_width = 2 * np.abs(x).max() / 2048
        assert abs(lo - ort_lo) <= ort_width + bin_width(ref_lo), (name, lo, ort_lo)
        assert abs(hi - ort_hi) <= ort_width + bin_width(ref_hi), (name, hi, ort_hi)

        t = float(np.percentile(np.abs(x64), percentile, method="inverted_cdf"))
        slo, shi = percentile_range(stats, percentile, symmetric=True)
        assert abs(shi - min(t, x.max())) <= bin_width(t), (name, shi, t)
        assert abs(slo - max(-t, x.min())) <= bin_width(t), (name, slo, t)
        ort_lo, ort_hi = ort_thresholds("percentile", x, percentile=percentile, symmetric=True)
        assert abs(shi - ort_hi) <= ort_width / 2 + bin_width(t), (name, shi, ort_hi)
        assert abs(slo - ort_lo) <= ort_width / 2 + bin_width(t), (name, slo, ort_lo)


def test_percentile_extremes_are_min_and_max(rng: np.random.Generator) -> None:
    x = rng.standard_normal(1000).astype(np.float32)
    stats = stats_of(x)
    assert percentile_range(stats, 100.0) == (float(x.min()), float(x.max())) == minmax_range(stats)
    with pytest.raises(CalibrationError):
        percentile_range(stats, 100.5)


# ---------------------------------------------------------------- entropy


@pytest.mark.parametrize(
    ("kind", "num_bins", "num_quantized_bins"),
    [("outliers", 1024, 128), ("outliers", 300, 64), ("relu", 512, 255), ("relu", 256, 128), ("uniform", 512, 128)],
)
def test_entropy_replicates_onnxruntime_on_its_histogram(
    rng: np.random.Generator, kind: str, num_bins: int, num_quantized_bins: int
) -> None:
    x = rng.standard_normal(int(rng.integers(5_000, 50_000))).astype(np.float32) * np.float32(rng.uniform(0.1, 10))
    if kind == "outliers":
        x[:3] *= 40
    elif kind == "relu":
        x = np.maximum(x, 0)
    else:
        x = rng.uniform(-1, 3, x.size).astype(np.float32)
    collector = HistogramCollector("entropy", False, num_bins, num_quantized_bins, 99.999, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"t": x})
        expected = collector.compute_collection_result()["t"][:2]
    hist, edges = collector.get_histogram_dict()["t"][:2]
    start, end = _entropy_window(hist.astype(np.int64), num_quantized_bins)
    got = (max(edges[start], x.min()), min(edges[end], x.max()))
    assert got == expected


@pytest.mark.parametrize(("kind", "num_bins"), [("normal", 2048), ("outliers", 1024)])
def test_entropy_range_close_to_onnxruntime(kind: str, num_bins: int) -> None:
    # A fixed seed: onnxruntime's KL curve is ragged, so its own threshold moves by up to ~10% (normal)
    # and ~25% (outliers) when each value is jittered by 2**-9, below our bin width. Over 16 fresh draws
    # we measured agreement within 5% for 11 (normal, worst 11%) and 16 (outliers, worst 4%).
    rng = np.random.default_rng(20240611)
    x = rng.standard_normal(100_000).astype(np.float32)
    if kind == "outliers":
        x[:8] = rng.uniform(20, 40, 8) * rng.choice([-1, 1], 8)
    ort_lo, ort_hi = ort_thresholds("entropy", x, num_bins=num_bins)
    lo, hi = entropy_range(stats_of(x), num_bins=num_bins)
    assert lo == pytest.approx(ort_lo, rel=0.05) and hi == pytest.approx(ort_hi, rel=0.05)
    if kind == "outliers":
        assert hi < 0.25 * x.max() and lo > 0.25 * x.min()


def test_entropy_clips_huge_outliers_and_is_fast(rng: np.random.Generator) -> None:
    x = rng.standard_normal(1_000_000).astype(np.float32)
    x[rng.choice(x.size, 3, replace=False)] = [1e4, -1e4, 3e3]
    stats = stats_of(x)
    start = time.process_time()  # CPU time, so that a loaded test machine does not fail it
    lo, hi = entropy_range(stats)
    elapsed = time.process_time() - start
    assert 3.0 < hi < 0.1 * 1e4 and -0.1 * 1e4 < lo < -3.0
    assert elapsed < 2.0  # typically 0.2-0.4 s; the bound only guards against a lost vectorization


# ---------------------------------------------------------------- constant and empty tensors

ALL_RANGES: list[Callable[[TensorStats], tuple[float, float]]] = [
    minmax_range,
    percentile_range,
    functools.partial(percentile_range, percentile=99.0, symmetric=True),
    entropy_range,
    functools.partial(entropy_range, num_quantized_bins=128, num_bins=128),
]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("value", [0.0, -0.0, 3.0, -2.5, 1e-30, -3.4e38])
@pytest.mark.parametrize("size", [1, 1000])
def test_constant_tensor(value: float, size: int) -> None:
    stats = stats_of(np.full(size, value, dtype=np.float32))
    v = float(np.float32(value))
    for compute in ALL_RANGES:
        assert compute(stats) == (v, v)


@pytest.mark.filterwarnings("error")
def test_two_values_and_one_sided() -> None:
    stats = stats_of(np.array([0.0, 1.0] * 50, dtype=np.float32))
    for compute in ALL_RANGES:
        lo, hi = compute(stats)
        assert 0.0 <= lo <= hi <= 1.0


@pytest.mark.parametrize("batches", [[], [np.zeros(0, np.float32)], [np.array([np.nan, np.inf], np.float32)]])
def test_empty_stats_raise(batches: list[npt.NDArray[np.float32]]) -> None:
    stats = stats_of(*batches)
    assert stats.count == 0 and stats.hist.sum() == 0
    for compute in ALL_RANGES:
        with pytest.raises(ValueError, match="no data"):
            compute(stats)


def test_rejects_non_float() -> None:
    with pytest.raises(CalibrationError):
        TensorStats().update(np.arange(3))
