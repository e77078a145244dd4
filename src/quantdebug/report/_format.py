"""Text and cell helpers every part of the HTML report shares: escaping, number formatting, severity badges.

Every name comes from an untrusted model, so every piece of text and every attribute goes through
`esc` (``html.escape(..., quote=True)``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from quantdebug.pipeline.results import LayerRow
from quantdebug.report._rows import is_tiny
from quantdebug.thresholds import FEW_ELEMENTS, SEVERITY, severity

CULPRITS_TITLE = "Likely culprits (by effect on the outputs)"  # the page, the notebook and the terminal


def esc(value: object) -> str:
    """Escape any value for HTML text, attributes and inline SVG."""
    return html.escape(str(value), quote=True)


def short(text: str, limit: int) -> str:
    """Shorten (before escaping) so that an entity is never cut in half."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt(value: float, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(digits - 1, 1)}e}"


def num_attr(value: float) -> str:
    """A sort key for a numeric cell; empty for missing values (always sorted last)."""
    return repr(float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else ""


def metric(row: LayerRow, name: str) -> float:
    return float(row.metrics.get(name, math.nan))


def rank_worst(layers: Sequence[LayerRow]) -> list[LayerRow]:
    """Rows by rmse/scale, worst first (an infinite error first of all); rows without a value go last."""
    return sorted(layers, key=lambda r: (math.isnan(r.rmse_over_scale), -finite_or(r.rmse_over_scale, 0.0)))


def finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def tooltip(row: LayerRow) -> str:
    tiny = f" — only {int(metric(row, 'num_elements'))} elements: noisy" if is_tiny(row) else ""
    return (
        f"{row.node_name} ({row.op_name}) → {row.tensor_name}\n"
        f"rmse/scale {fmt(row.rmse_over_scale)} · range {fmt(row.range)} · scale {fmt(row.scale)} · "
        f"MSE {fmt(metric(row, 'mean_squared_error'))} · {row.precision}{tiny}"
    )


def badge(row: LayerRow) -> str:
    level = severity(row.rmse_over_scale)
    return f'<span class="sev sev-{level}" title="{esc(SEVERITY[level][0])}">{esc(fmt(row.rmse_over_scale))}</span>'


def tiny_flag(row: LayerRow) -> str:
    if not is_tiny(row):
        return ""
    return f' <span class="flag" title="fewer than {FEW_ELEMENTS} elements: rmse/scale is noisy">few elements</span>'


def name_cell(text: str) -> str:
    return f'<span class="name">{esc(text)}</span>' if text else '<span class="muted">—</span>'
