"""Quantization ranges (lo, hi) computed from `TensorStats`: min/max, percentile and entropy.

Percentile and entropy follow onnxruntime's HistogramCollector, applied to our fixed log histogram.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantdebug.errors import CalibrationError
from quantdebug.pipeline.calibrate._stats import TensorStats, bin_edges, magnitude_edges

_SMOOTH_EPS = 1e-4  # onnxruntime's smooth_distribution default, in units of one sample


def _require_data(stats: TensorStats) -> None:
    if stats.count == 0:
        raise CalibrationError(
            f"no data to compute a range from: the tensor stats hold no finite values "
            f"({stats.nonfinite} non-finite ones were skipped); run calibration on at least one sample"
        )


def minmax_range(stats: TensorStats) -> tuple[float, float]:
    """The exact (minimum, maximum) of the finite values seen."""
    _require_data(stats)
    return stats.minimum, stats.maximum


def _quantile(hist: npt.NDArray[np.int64], edges: npt.NDArray[np.float64], rank: float) -> float:
    """Value below which ``rank`` samples lie, interpolating linearly within the bin that holds it."""
    cum = np.cumsum(hist)
    if rank <= 0:
        return float(edges[0])
    if rank >= cum[-1]:
        return float(edges[-1])
    j = int(np.searchsorted(cum, rank, side="left"))
    # j is the first bin reaching rank, so everything before it lies below rank and hist[j] > 0.
    before = float(cum[j] - hist[j])
    frac = (rank - before) / float(hist[j])
    return float(edges[j] + frac * (edges[j + 1] - edges[j]))


def percentile_range(stats: TensorStats, percentile: float = 99.999, symmetric: bool = False) -> tuple[float, float]:
    """Range keeping ``percentile`` percent of the values, as onnxruntime's Percentile calibrator.

    Asymmetric: ``(100 - percentile) / 2`` percent is cut from each tail. Symmetric: ``t`` is the
    ``percentile`` of |x| and the range ``(-t, t)``. Either way the result is clamped within
    [minimum, maximum], as onnxruntime does, so a symmetric range of non-negative data starts at its min.
    """
    if not 0.0 <= percentile <= 100.0:
        raise CalibrationError(f"percentile must be within [0, 100], got {percentile}")
    _require_data(stats)
    lo_bound, hi_bound = stats.minimum, stats.maximum
    if symmetric:
        amax = max(abs(lo_bound), abs(hi_bound))
        edges = np.clip(magnitude_edges(), 0.0, amax)
        t = _quantile(stats.abs_hist(), edges, percentile / 100.0 * stats.count)
        lo, hi = -t, t
    else:
        # Clamping the edges makes the outermost occupied bins end exactly at the known min and max.
        edges = np.clip(bin_edges(), lo_bound, hi_bound)
        cut = (100.0 - percentile) / 200.0
        lo = _quantile(stats.hist, edges, cut * stats.count)
        hi = _quantile(stats.hist, edges, (1.0 - cut) * stats.count)
    return float(np.clip(lo, lo_bound, hi_bound)), float(np.clip(hi, lo_bound, hi_bound))


def linear_histogram(stats: TensorStats, num_bins: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Re-bin onto ``num_bins`` equal bins over [-max|x|, max|x|], like onnxruntime's entropy histogram.

    Each log bin's count is spread uniformly over its extent (clamped to [min, max]); cumulative
    counts are rounded at each new edge so the result stays integral and sums to ``count``.
    """
    _require_data(stats)
    amax = max(abs(stats.minimum), abs(stats.maximum))
    new_edges = np.linspace(-amax, amax, num_bins + 1)
    edges = np.clip(bin_edges(), stats.minimum, stats.maximum)
    cum = np.concatenate([[0], np.cumsum(stats.hist)])
    j = np.clip(np.searchsorted(edges, new_edges, side="right") - 1, 0, len(stats.hist) - 1)
    width = edges[j + 1] - edges[j]
    # Zero-width bins (clamped away, or a point mass at min or max) count as wholly below the edge.
    frac = np.divide(new_edges - edges[j], width, out=np.ones_like(width), where=width > 0)
    below = cum[j] + stats.hist[j] * np.clip(frac, 0.0, 1.0)
    below[0], below[-1] = 0.0, float(stats.count)
    return np.diff(np.rint(below).astype(np.int64)), new_edges


def _smooth(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float32] | None:
    """onnxruntime's smooth_distribution: move eps of mass onto empty bins; None if all are empty."""
    nonzero = p != 0
    n_nonzero = int(np.count_nonzero(nonzero))
    if n_nonzero == 0:
        return None
    eps1 = _SMOOTH_EPS * (p.size - n_nonzero) / n_nonzero
    # float32 like onnxruntime, whose near-tied divergences otherwise pick a neighbouring window.
    shift = np.where(nonzero, np.float32(-eps1), np.float32(_SMOOTH_EPS))
    smoothed = p.astype(np.float32) + shift
    # onnxruntime asserts instead; only reachable with more than ~10k bins, where eps1 can exceed a count.
    return np.maximum(smoothed, np.float32(_SMOOTH_EPS))


def _kl(p: npt.NDArray[np.float32], q: npt.NDArray[np.float32]) -> float:
    pn, qn = p / p.sum(), q / q.sum()
    return float(np.sum(pn * np.log(pn / qn)))


def _entropy_divergences(hist: npt.NDArray[np.int64], num_quantized_bins: int) -> npt.NDArray[np.float64]:
    """KL divergence of each candidate window, replicating onnxruntime's get_entropy_threshold.

    Its quirks are kept on purpose, so the same histogram gives the same choice: windows have
    2i+1 bins and are never a multiple of the quantized bins; the leftover top bins get q = 0;
    q is truncated to integers and spread over empty bins of p too.
    """
    num_bins = hist.size
    zero, half = num_bins // 2, num_quantized_bins // 2
    cum = np.concatenate([[0], np.cumsum(hist)])
    out = np.full(zero - half + 1, np.inf)
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        sliced = hist[start:end]
        merged = sliced.size // num_quantized_bins
        if merged == 0:
            continue  # onnxruntime gets an all-zero q here, hence an infinite divergence
        p = sliced.astype(np.float64)
        p[0] += cum[start]
        p[-1] += cum[-1] - cum[end]
        main = num_quantized_bins * merged
        quantized = sliced[:main].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[main:].sum()
        norm = (p[:main] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        per_bin = np.floor(np.divide(quantized, norm, out=np.zeros(norm.shape), where=norm > 0))
        q = np.zeros(p.size)
        q[:main] = np.repeat(per_bin, merged)
        ps, qs = _smooth(p), _smooth(q)
        if ps is not None and qs is not None:
            out[i - half] = _kl(ps, qs)
    return out


def _entropy_window(hist: npt.NDArray[np.int64], num_quantized_bins: int) -> tuple[int, int]:
    """Bin indices (start, end) of the window onnxruntime would pick on this symmetric histogram."""
    best = int(np.argmin(_entropy_divergences(hist, num_quantized_bins)))
    zero, i = hist.size // 2, num_quantized_bins // 2 + best
    return zero - i, min(zero + i + 1, hist.size)


def entropy_range(stats: TensorStats, num_quantized_bins: int = 128, num_bins: int = 4096) -> tuple[float, float]:
    """Range minimizing the KL divergence, as onnxruntime's Entropy calibrator (TensorRT-style).

    ``num_bins`` has onnxruntime's meaning: equal bins over [-max|x|, max|x|] (so 4096 is 2048 bins
    over [0, max|x|]); onnxruntime's own default, 128, leaves a single candidate, i.e. min/max.
    ``num_quantized_bins`` also spans the whole signed window, as in onnxruntime.
    """
    if num_quantized_bins < 1 or num_bins < num_quantized_bins:
        raise CalibrationError(
            f"entropy calibration needs 1 <= num_quantized_bins <= num_bins, got {num_quantized_bins} and {num_bins}"
        )
    _require_data(stats)
    lo_bound, hi_bound = stats.minimum, stats.maximum
    if lo_bound == hi_bound:
        return lo_bound, hi_bound
    hist, edges = linear_histogram(stats, num_bins)
    start, end = _entropy_window(hist, num_quantized_bins)
    return float(np.clip(edges[start], lo_bound, hi_bound)), float(np.clip(edges[end], lo_bound, hi_bound))
