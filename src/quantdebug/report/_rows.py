"""Which layer rows every report view treats apart (tiny, exact copies, sizes that vary), and graph order."""

from __future__ import annotations

import math
from collections.abc import Sequence

from quantdebug.pipeline.results import LayerRow
from quantdebug.thresholds import FEW_ELEMENTS


def is_tiny(row: LayerRow) -> bool:
    """Rows with fewer than `FEW_ELEMENTS` elements: rmse/scale is too noisy to judge."""
    n = row.metrics.get("num_elements", math.nan)
    return math.isfinite(n) and n < FEW_ELEMENTS


def is_exact_copy(row: LayerRow) -> bool:
    """Rows whose error is exactly zero: data movement (Slice, Pad, Reshape, ...) copying integers as they are.

    They say nothing about quantization, and a model full of them drags summary figures to 0.
    """
    return row.metrics.get("max_abs_error", math.nan) == 0.0 and row.metrics.get("mean_squared_error", math.nan) == 0.0


def has_mean_elements(row: LayerRow) -> bool:
    """Rows whose ``num_elements`` is not a whole number: the mean over samples of different sizes (as TFLite)."""
    n = row.metrics.get("num_elements", math.nan)
    return math.isfinite(n) and not float(n).is_integer()


def graph_order(layers: Sequence[LayerRow]) -> list[LayerRow]:
    """Rows in graph (tensor index) order; ties keep their saved order."""
    return sorted(layers, key=lambda r: r.tensor_idx)
