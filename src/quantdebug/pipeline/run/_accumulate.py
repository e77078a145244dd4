"""Mergeable accumulators of per-sample metrics: float64 sums and counts, nothing per sample kept.

TFLite's definition is followed exactly: each metric is computed per sample and the reported
value is the NaN-ignoring mean over samples (so ``max_abs_error`` is the mean of per-sample
maxima and ``stddev`` the mean of per-sample standard deviations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class MeanAccumulator:
    """NaN-ignoring running means of named per-sample values, for many rows at once."""

    def __init__(self, rows: int, metrics: Sequence[str]) -> None:
        self.metrics = tuple(metrics)
        self.sums = np.zeros((rows, len(self.metrics)), dtype=np.float64)
        self.counts = np.zeros((rows, len(self.metrics)), dtype=np.int64)
        self.samples = 0

    def update(self, values: np.ndarray) -> None:
        """``values``: [samples, rows, metrics] per-sample values."""
        values = np.asarray(values, dtype=np.float64)
        finite = ~np.isnan(values)
        self.sums += np.where(finite, values, 0.0).sum(axis=0)
        self.counts += finite.sum(axis=0)
        self.samples += values.shape[0]

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        if other.metrics != self.metrics or other.sums.shape != self.sums.shape:
            raise ValueError("cannot merge accumulators of different layouts")
        out = MeanAccumulator(self.sums.shape[0], self.metrics)
        out.sums = self.sums + other.sums
        out.counts = self.counts + other.counts
        out.samples = self.samples + other.samples
        return out

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(self.metrics),
            "sums": self.sums.tolist(),
            "counts": self.counts.tolist(),
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeanAccumulator:
        sums = np.asarray(data["sums"], dtype=np.float64)
        out = cls(sums.shape[0], data["metrics"])
        out.sums = sums.reshape(out.sums.shape)
        out.counts = np.asarray(data["counts"], dtype=np.int64).reshape(out.counts.shape)
        out.samples = int(data["samples"])
        return out


def default_metrics(stats: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-sample default metrics from the debug graph's [B, 4U] statistics and [2U] shapes.

    The four statistics of a unit are the sum, sum of squares, max and min of its difference.
    Returns [B, U, 5] in the order of ``DEFAULT_METRICS``.
    """
    stats = np.asarray(stats, dtype=np.float64)
    total = stats[:, 0::4]
    squares = stats[:, 1::4]
    peak = np.maximum(stats[:, 2::4], -stats[:, 3::4])  # the largest magnitude; NaN if either is
    n = np.broadcast_to(np.asarray(sizes, dtype=np.float64).reshape(-1, 2)[:, 1], total.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        mse = squares / n
        # the sums come from float32 reductions: a variance within their rounding of zero is zero
        variance = mse - mean * mean
        noise = 8 * np.finfo(np.float32).eps * mse
        stddev = np.sqrt(np.where(variance > noise, variance, 0.0))
    return np.stack([n, stddev, mean, peak, mse], axis=-1)
