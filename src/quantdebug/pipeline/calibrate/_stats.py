"""Streaming, exactly mergeable per-tensor calibration statistics.

Counts, exact min/max and a fixed log-linear histogram over float32 bit patterns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from quantdebug.errors import CalibrationError

MANTISSA_BITS = 6
"""Mantissa bits kept per bin: each bin spans a relative width of at most 2**-6 of its magnitude."""

_SHIFT = 23 - MANTISSA_BITS
# Smallest magnitude with its own bin is 2**-24 (float32 exponent field 103); below it, the zero bin.
_RAW_MIN = (127 - 24) << MANTISSA_BITS
# The largest finite float32 has exponent field 254 and all mantissa bits set.
_RAW_MAX = (254 << MANTISSA_BITS) | ((1 << MANTISSA_BITS) - 1)
_NMAG = _RAW_MAX - _RAW_MIN + 1
_NCODES = 1 << (32 - _SHIFT)  # a code is a float32's sign, exponent and top mantissa bits
_NEGATIVE = _NCODES // 2  # codes from here on have the sign bit set

ZERO_BIN = _NMAG
"""Index of the bin holding 0 and every magnitude below 2**-24."""

NBINS = 2 * _NMAG + 1
"""Total bins: negative bins (most negative first), the zero bin, positive bins."""

_F32_MAX = float(np.finfo(np.float32).max)
_VERSION = 1


def _magnitude_edges() -> npt.NDArray[np.float64]:
    """Lower magnitude edge of each nonzero bin, plus the top edge 2**128 (len _NMAG + 1)."""
    raw = np.arange(_RAW_MIN, _RAW_MAX + 2, dtype=np.int64)
    exponent = (raw >> MANTISSA_BITS) - 127
    mantissa = (raw & ((1 << MANTISSA_BITS) - 1)) / float(1 << MANTISSA_BITS)
    # float64 arithmetic so that the top edge, 2**128, does not overflow as it would in float32.
    return np.ldexp(1.0 + mantissa, exponent.astype(np.int32))


_MAG_EDGES = _magnitude_edges()
_EDGES = np.concatenate([-_MAG_EDGES[::-1], _MAG_EDGES])
_MAG_EDGES.flags.writeable = False
_EDGES.flags.writeable = False


def bin_edges() -> npt.NDArray[np.float64]:
    """Value edges of all bins (len NBINS + 1, increasing); bin ``b`` spans ``edges[b]`` to ``edges[b + 1]``.

    Bins are closed on the side nearer zero: a positive bin is ``[lo, hi)``, a negative one ``(lo, hi]``
    (the magnitude is always in ``[lo, hi)``), and the zero bin is ``(-2**-24, 2**-24)``.
    """
    return _EDGES


def magnitude_edges() -> npt.NDArray[np.float64]:
    """Edges of the folded |x| histogram from `TensorStats.abs_hist`: ``[0, 2**-24, ..., 2**128]``."""
    return np.concatenate([[0.0], _MAG_EDGES])


def _code_to_bin() -> npt.NDArray[np.int64]:
    """Bin of each 15-bit code (sign, exponent, top mantissa bits) of a float32; -1 for NaN and Inf."""
    code = np.arange(_NCODES, dtype=np.int64)
    magnitude = code & (_NEGATIVE - 1)
    offset = np.maximum(magnitude - (_RAW_MIN - 1), 0)
    bins = np.where(code >= _NEGATIVE, ZERO_BIN - offset, ZERO_BIN + offset)
    return np.where(magnitude > _RAW_MAX, -1, bins)


_CODE_TO_BIN = _code_to_bin()
_CODE_TO_BIN.flags.writeable = False


def _codes(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    # A float32's bit pattern is monotone in its magnitude, so its top bits index log-linear bins.
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    return bits >> np.uint32(_SHIFT)


def _empty_hist() -> npt.NDArray[np.int64]:
    return np.zeros(NBINS, dtype=np.int64)


@dataclass(eq=False)
class TensorStats:
    """Everything calibration keeps about one tensor; memory does not grow with the data seen."""

    count: int = 0
    nonfinite: int = 0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    hist: npt.NDArray[np.int64] = field(default_factory=_empty_hist)

    def update(self, array: npt.ArrayLike) -> None:
        """Add the values of one batch (float16/32/64, any shape); NaN and +-Inf are only counted."""
        x = np.asarray(array)
        if not np.issubdtype(x.dtype, np.floating):
            raise CalibrationError(f"calibration expects a float tensor, got dtype {x.dtype}")
        x = x.reshape(-1)
        if x.dtype.itemsize > 4:
            finite = np.isfinite(x)
            if not finite.all():
                x = x[finite]
                self.nonfinite += finite.size - x.size
            # Values beyond float32's range would overflow to inf in the cast: bin them at the top.
            f32 = np.clip(x, -_F32_MAX, _F32_MAX).astype(np.float32)
        else:
            f32 = x.astype(np.float32, copy=False)
        # One bincount over the 15-bit codes, then a fold onto bins: cheaper than indexing every value.
        per_code = np.bincount(_codes(f32), minlength=_NCODES)
        positive = per_code[_RAW_MIN : _RAW_MAX + 1]
        negative = per_code[_NEGATIVE + _RAW_MIN : _NEGATIVE + _RAW_MAX + 1]
        zero = int(per_code[:_RAW_MIN].sum() + per_code[_NEGATIVE : _NEGATIVE + _RAW_MIN].sum())
        n_finite = int(positive.sum() + negative.sum()) + zero
        if n_finite < x.size:
            self.nonfinite += x.size - n_finite
            x = x[np.isfinite(x)]
        if n_finite == 0:
            return
        self.hist[ZERO_BIN + 1 :] += positive
        self.hist[:ZERO_BIN] += negative[::-1]
        self.hist[ZERO_BIN] += zero
        self.count += n_finite
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))

    def merge(self, other: TensorStats) -> TensorStats:
        """Return the stats of both inputs' data together; exact, so sharded passes can be combined."""
        return TensorStats(
            count=self.count + other.count,
            nonfinite=self.nonfinite + other.nonfinite,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            hist=self.hist + other.hist,
        )

    def abs_hist(self) -> npt.NDArray[np.int64]:
        """Histogram of |x| over `magnitude_edges` (zero bin first)."""
        folded = self.hist[ZERO_BIN:].copy()
        folded[1:] += self.hist[:ZERO_BIN][::-1]
        return folded

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return (
            self.count == other.count
            and self.nonfinite == other.nonfinite
            and self.minimum == other.minimum
            and self.maximum == other.maximum
            and bool(np.array_equal(self.hist, other.hist))
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the histogram is stored sparsely and min/max are null when empty."""
        nonzero = np.flatnonzero(self.hist)
        empty = self.count == 0
        return {
            "version": _VERSION,
            "mantissa_bits": MANTISSA_BITS,
            "nbins": NBINS,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "minimum": None if empty else self.minimum,
            "maximum": None if empty else self.maximum,
            "hist_index": nonzero.tolist(),
            "hist_count": self.hist[nonzero].tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorStats:
        """Rebuild stats written by `to_dict`, checking that they use this module's bin layout."""
        if data.get("version") != _VERSION:
            version = data.get("version")
            raise CalibrationError(f"tensor stats version {version!r} is not supported (expected {_VERSION})")
        if data.get("mantissa_bits") != MANTISSA_BITS or data.get("nbins") != NBINS:
            raise CalibrationError("tensor stats use another histogram layout; recalibrate")
        try:
            index = np.asarray(data["hist_index"], dtype=np.int64)
            counts = np.asarray(data["hist_count"], dtype=np.int64)
            count = int(data["count"])
            stats = cls(
                count=count,
                nonfinite=int(data["nonfinite"]),
                minimum=float("inf") if count == 0 else float(data["minimum"]),
                maximum=float("-inf") if count == 0 else float(data["maximum"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"tensor stats are malformed: {exc!r}") from exc
        valid = index.ndim == 1 and index.shape == counts.shape and len(np.unique(index)) == index.size
        if not (valid and np.all((index >= 0) & (index < NBINS)) and np.all(counts >= 0)):
            raise CalibrationError("tensor stats histogram is malformed: bad indices or counts")
        stats.hist[index] = counts
        if int(stats.hist.sum()) != count or (count > 0 and not stats.minimum <= stats.maximum):
            raise CalibrationError("tensor stats are inconsistent: the histogram disagrees with count, min or max")
        return stats
