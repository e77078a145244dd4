"""One self-contained HTML report, rendered only from a saved `Statistics` object.

No network: charts are inline SVG drawn here, the one small script (table sorting and filtering)
is inline and pinned by a Content-Security-Policy hash. Every name comes from an untrusted model,
so every piece of text and every attribute goes through `html.escape(..., quote=True)`; no
script is ever built from data.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import html
import json
import math
import os
import statistics as pystats
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantdebug.pipeline.results._results import LayerRow, Statistics
from quantdebug.report._plots import (
    FEW_ELEMENTS,
    IDEAL_RMSE_OVER_SCALE,
    SEVERITY,
    SUSPECT_RMSE_OVER_SCALE,
    graph_order,
    has_mean_elements,
    is_exact_copy,
    is_tiny,
    severity,
)
from quantdebug.report._tables import culprits_table, denylist_line
from quantdebug.support import _io

WORST_ROWS = 10
MAX_HISTOGRAMS = 6
_NAN = math.nan


def esc(value: object) -> str:
    """Escape any value for HTML text, attributes and inline SVG."""
    return html.escape(str(value), quote=True)


def _short(text: str, limit: int) -> str:
    """Shorten (before escaping) so that an entity is never cut in half."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(digits - 1, 1)}e}"


def _num_attr(value: float) -> str:
    """A sort key for a numeric cell; empty for missing values (always sorted last)."""
    return repr(float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _metric(row: LayerRow, name: str) -> float:
    return float(row.metrics.get(name, _NAN))


def _rank_worst(layers: Sequence[LayerRow]) -> list[LayerRow]:
    """Rows by rmse/scale, worst first (an infinite error first of all); rows without a value go last."""
    return sorted(layers, key=lambda r: (math.isnan(r.rmse_over_scale), -_finite_or(r.rmse_over_scale, 0.0)))


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


# -- SVG drawing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """Maps data values onto pixels, linearly or on a log10 scale."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False

    def __call__(self, value: float) -> float:
        if self.log:
            value = math.log10(max(value, self.lo))
            lo, hi = math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        frac = 0.0 if hi == lo else (value - lo) / (hi - lo)
        return self.px_lo + frac * (self.px_hi - self.px_lo)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            decades = [10.0**e for e in range(first, last + 1)]
            mult = (1.0,) if len(decades) > 4 else (1.0, 3.0) if len(decades) > 3 else (1.0, 2.0, 5.0)
            out = [d * m for d in decades for m in mult]
            return [t for t in out if self.lo * 0.999 <= t <= self.hi * 1.001]
        step = _nice_step((self.hi - self.lo) / 5)
        start = math.ceil(self.lo / step) * step
        count = math.floor((self.hi - start) / step + 1e-9) + 1
        return [start + i * step for i in range(max(count, 0))]


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exp = math.floor(math.log10(raw))
    base = raw / 10**exp
    nice = 1.0 if base <= 1 else 2.0 if base <= 2 else 2.5 if base <= 2.5 else 5.0 if base <= 5 else 10.0
    return nice * 10**exp


def _value_axis(
    values: Sequence[float], px_lo: float, px_hi: float, *, log: bool | None, refs: Sequence[float] = ()
) -> _Axis:
    """An axis that shows every finite value and reference line; log when asked or when values span > 2 decades."""
    finite = [v for v in [*values, *refs] if math.isfinite(v)]
    positive = [v for v in finite if v > 0]
    if log is None:
        log = bool(positive) and len(positive) == len(finite) and max(positive) / min(positive) > 100
    if log and positive:
        lo, hi = min(positive), max(positive)
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        if hi <= lo:
            hi = lo * 10
        return _Axis(lo, hi, px_lo, px_hi, log=True)
    hi = max(finite, default=1.0)
    lo = min(0.0, min(finite, default=0.0))
    hi = hi * 1.08 if hi > 0 else 1.0
    step = _nice_step((hi - lo) / 5)
    return _Axis(lo, math.ceil(hi / step) * step, px_lo, px_hi)


def _svg_open(width: int, height: int, label: str, cls: str = "chart") -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
        f'preserveAspectRatio="xMidYMid meet">'
    )


def _tick(axis: _Axis, value: float) -> str:
    if axis.log and not 1e-3 <= value < 1e4:
        mantissa, exp = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{value:.6g}"


def _y_grid(axis: _Axis, x0: float, x1: float) -> list[str]:
    parts = []
    fmt = functools.partial(_tick, axis)
    for t in axis.ticks():
        y = axis(t)
        parts.append(f'<line class="grid" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{x0 - 6:.1f}" y="{y + 3.5:.1f}" text-anchor="end">{esc(fmt(t))}</text>')
    return parts


def _ref_lines(axis: _Axis, x0: float, x1: float, refs: Sequence[tuple[float, str, str]]) -> list[str]:
    """Dashed reference lines across the plot, labelled in the right margin without overlapping."""
    shown = sorted(((axis(v), text, cls) for v, text, cls in refs if axis.lo <= v <= axis.hi), key=lambda t: t[0])
    parts, last = [], -math.inf
    for y, text, cls in shown:
        parts.append(f'<line class="ref {cls}" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        label_y = max(y + 4, last + 13)
        last = label_y
        parts.append(f'<text class="reflabel {cls}" x="{x1 + 6:.1f}" y="{label_y:.1f}">{esc(text)}</text>')
    return parts


def _bar_chart(
    rows: Sequence[LayerRow],
    values: Sequence[float],
    *,
    label: str,
    ylabel: str,
    colors: Sequence[str],
    tooltips: Sequence[str],
    refs: Sequence[tuple[float, str, str]] = (),
    log: bool | None = None,
    classes: Sequence[str] = (),
) -> str:
    """A bar per layer, in the given order; each bar's <title> names its node."""
    n = len(rows)
    width, top, left, right = 1000, 16, 68, 96
    labelled = n <= 48
    names = [_short(r.node_name or r.tensor_name, 18) for r in rows]
    bottom = int(min(118, 26 + 5.6 * max(map(len, names), default=0))) if labelled else 40
    height = top + 250 + bottom
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    axis = _value_axis(values, y1, y0, log=log, refs=[r[0] for r in refs])
    parts = [_svg_open(width, height, label)]
    parts += _y_grid(axis, x0, x1)
    band = (x1 - x0) / max(n, 1)
    bar_w = max(band * 0.78, 0.6)
    base = axis(axis.lo) if axis.log else axis(0.0)
    for i, v in enumerate(values):
        cx = x0 + band * (i + 0.5)
        cls = f"bar {classes[i]}" if classes else "bar"
        title = f"<title>{esc(tooltips[i])}</title>"
        if v == math.inf:
            v = axis.hi  # an infinite error fills the plot
        if not math.isfinite(v) or (axis.log and v <= 0):
            parts.append(
                f'<g class="{cls} missing"><circle cx="{cx:.1f}" cy="{base - 4:.1f}" r="2.5" fill="#9aa0a6"/>'
                f"{title}</g>"
            )
            continue
        y = axis(v)
        top_y, h = min(y, base), max(abs(base - y), 0.8)
        parts.append(
            f'<rect class="{cls}" x="{cx - bar_w / 2:.2f}" y="{top_y:.2f}" width="{bar_w:.2f}" height="{h:.2f}" '
            f'fill="{esc(colors[i])}">{title}</rect>'
        )
        if labelled:
            name = names[i]
            parts.append(
                f'<text class="xlabel" transform="translate({cx + 3:.1f},{y1 + 8:.1f}) rotate(-60)" '
                f'text-anchor="end">{esc(name)}</text>'
            )
    if not labelled:
        step = max(1, math.ceil(n / 20))
        for i in range(0, n, step):
            cx = x0 + band * (i + 0.5)
            parts.append(f'<text class="tick" x="{cx:.1f}" y="{y1 + 16:.1f}" text-anchor="middle">{i}</text>')
        parts.append(
            f'<text class="axis-title" x="{(x0 + x1) / 2:.1f}" y="{height - 4:.1f}" text-anchor="middle">'
            "layer index (graph order) — hover a bar for its node</text>"
        )
    parts += _ref_lines(axis, x0, x1, refs)
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    parts.append(
        f'<text class="axis-title" transform="translate(16,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{esc(ylabel)}{' (log scale)' if axis.log else ''}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _line_panel(
    parts: list[str],
    values: Sequence[float],
    tooltips: Sequence[str],
    *,
    x_of: Callable[[int], float],
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    ylabel: str,
    color: str,
    refs: Sequence[tuple[float, str, str]] = (),
) -> None:
    """One log-scale line panel of the error-propagation chart."""
    axis = _value_axis(values, y1, y0, log=True, refs=[r[0] for r in refs])
    parts += _y_grid(axis, x0, x1)
    points = [(x_of(i), axis(v)) for i, v in enumerate(values) if math.isfinite(v) and v > 0]
    if len(points) > 1:
        d = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y) in enumerate(points))
        parts.append(f'<path class="series" d="{d}" stroke="{color}"/>')
    radius = 3 if len(values) <= 100 else 1.8
    for i, v in enumerate(values):
        if math.isfinite(v) and v > 0:
            parts.append(
                f'<circle class="dot" cx="{x_of(i):.1f}" cy="{axis(v):.1f}" r="{radius}" fill="{color}">'
                f"<title>{esc(tooltips[i])}</title></circle>"
            )
    parts += _ref_lines(axis, x0, x1, refs)
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    parts.append(
        f'<text class="axis-title" transform="translate(16,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{esc(ylabel)} (log)</text>"
    )


def _propagation_chart(rows: Sequence[LayerRow], tooltips: Sequence[str]) -> str:
    """Whole-model mode: how the error grows along the graph (MSE and rmse/scale, log scale)."""
    n = len(rows)
    width, left, right, panel, gap = 1000, 68, 96, 190, 34
    height = 14 + panel + gap + panel + 40
    x0, x1 = left, width - right
    band = (x1 - x0) / max(n, 1)

    def x_of(i: int) -> float:
        return x0 + band * (i + 0.5)

    parts = [_svg_open(width, height, "error propagation along the graph")]
    _line_panel(
        parts,
        [_metric(r, "mean_squared_error") for r in rows],
        tooltips,
        x_of=x_of,
        x0=x0,
        x1=x1,
        y0=14,
        y1=14 + panel,
        ylabel="MSE",
        color="#4a78b5",
    )
    top2 = 14 + panel + gap
    _line_panel(
        parts,
        [r.rmse_over_scale for r in rows],
        tooltips,
        x_of=x_of,
        x0=x0,
        x1=x1,
        y0=top2,
        y1=top2 + panel,
        ylabel="rmse / scale",
        color="#c0504d",
        refs=[(IDEAL_RMSE_OVER_SCALE, "0.289 ideal", "ideal"), (SUSPECT_RMSE_OVER_SCALE, "0.7 suspect", "suspect")],
    )
    step = max(1, math.ceil(n / 20))
    for i in range(0, n, step):
        parts.append(
            f'<text class="tick" x="{x_of(i):.1f}" y="{top2 + panel + 16:.1f}" text-anchor="middle">{i}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{(x0 + x1) / 2:.1f}" y="{height - 4}" text-anchor="middle">'
        "layer index (graph order) — hover a point for its node</text></svg>"
    )
    return "".join(parts)


def _histogram_chart(name: str, hist: Mapping[str, Any]) -> str:
    """Float vs quantized value histogram of one tensor; empty when the data is malformed."""
    try:
        edges = [float(e) for e in hist["edges"]]
        series = {k: [float(c) for c in hist[k]] for k in ("float", "quantized") if k in hist}
    except (KeyError, TypeError, ValueError):
        return ""
    if len(edges) < 2 or not series or any(len(c) != len(edges) - 1 for c in series.values()):
        return ""
    if not all(math.isfinite(e) for e in edges) or edges[-1] <= edges[0]:
        return ""
    width, height, left, right, top, bottom = 480, 230, 56, 10, 10, 34
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    xa = _Axis(edges[0], edges[-1], x0, x1)
    peak = max((c for counts in series.values() for c in counts if math.isfinite(c)), default=1.0) or 1.0
    ya = _Axis(0.0, peak * 1.05, y1, y0)
    parts = [_svg_open(width, height, f"histogram of {name}", cls="chart hist")]
    parts += _y_grid(ya, x0, x1)
    for key, cls in (("float", "h-float"), ("quantized", "h-quant")):
        counts = series.get(key)
        if counts is None:
            continue
        d = [f"M{xa(edges[0]):.1f},{ya(0):.1f}"]
        for i, c in enumerate(counts):
            y = ya(_finite_or(c, 0.0))
            d.append(f"L{xa(edges[i]):.1f},{y:.1f}L{xa(edges[i + 1]):.1f},{y:.1f}")
        d.append(f"L{xa(edges[-1]):.1f},{ya(0):.1f}Z")
        parts.append(f'<path class="{cls}" d="{"".join(d)}"><title>{esc(key)} values of {esc(name)}</title></path>')
    for t in xa.ticks():
        parts.append(
            f'<text class="tick" x="{xa(t):.1f}" y="{y1 + 15:.1f}" text-anchor="middle">{esc(_fmt(t, 3))}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    parts.append(f'<text class="axis-title" x="{(x0 + x1) / 2:.1f}" y="{height - 3}" text-anchor="middle">value</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fix_chart(fix: Mapping[str, Any]) -> str:
    """The fix search: quality against the number of nodes left out of int8, one dot per try."""
    trace = [t for t in fix.get("trace", []) if isinstance(t, Mapping)]
    pts: list[tuple[float, float, bool, str]] = []
    for i, item in enumerate(trace):
        try:
            q, n = float(item.get("quality", _NAN)), float(item.get("non_int8_nodes", _NAN))
        except (TypeError, ValueError):
            continue
        if not (math.isfinite(q) and math.isfinite(n)):
            continue
        changes = item.get("changes") or []
        change_text = "; ".join(str(c) for c in changes) if isinstance(changes, list) else str(changes)
        met = bool(item.get("meets_target", item.get("accepted")))  # fix traces say meets_target
        tip = (
            f"try {i + 1}: quality {_fmt(q)}, {int(n)} non-int8 node(s), size {item.get('size', '—')}, "
            f"{'meets the target' if met else 'misses the target'}"
            + (f"\nchanges: {_short(change_text, 300)}" if change_text else "")
        )
        pts.append((n, q, met, tip))
    refs = []
    for key, text, cls in (
        ("float_quality", "float", "ideal"),
        ("int8_quality", "int8", "suspect"),
        ("fixed_quality", "fixed", "fixed"),
    ):
        try:
            v = float(fix.get(key, _NAN))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            refs.append((v, f"{text} {_fmt(v)}", cls))
    if not pts:
        return ""
    width, height, left, right, top, bottom = 1000, 340, 68, 96, 16, 40
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    xs, qs = [p[0] for p in pts], [p[1] for p in pts] + [r[0] for r in refs]
    xa = _Axis(min(0.0, min(xs)), max(xs) + 1 if max(xs) > 0 else 1.0, x0 + 10, x1 - 10)
    span = (max(qs) - min(qs)) or abs(max(qs)) or 1.0
    ya = _Axis(min(qs) - 0.08 * span, max(qs) + 0.08 * span, y1, y0)
    parts = [_svg_open(width, height, "fix search trace")]
    parts += _y_grid(ya, x0, x1)
    for t in xa.ticks():
        if float(t).is_integer():
            parts.append(f'<text class="tick" x="{xa(t):.1f}" y="{y1 + 16:.1f}" text-anchor="middle">{int(t)}</text>')
    parts += _ref_lines(ya, x0, x1, refs)
    accepted = [(xa(n), ya(q)) for n, q, ok, _ in pts if ok]
    if len(accepted) > 1:
        d = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y) in enumerate(accepted))
        parts.append(f'<path class="series path-accepted" d="{d}"/>')
    for n, q, ok, tip in pts:
        cls = "pt accepted" if ok else "pt rejected"
        parts.append(
            f'<circle class="{cls}" cx="{xa(n):.1f}" cy="{ya(q):.1f}" r="5"><title>{esc(tip)}</title></circle>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    parts.append(
        f'<text class="axis-title" x="{(x0 + x1) / 2:.1f}" y="{height - 4}" text-anchor="middle">'
        "nodes left out of int8</text>"
        f'<text class="axis-title" transform="translate(16,{(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        "quality</text></svg>"
    )
    return "".join(parts)


# -- HTML sections -----------------------------------------------------------------------------
def _tooltip(row: LayerRow) -> str:
    tiny = f" — only {int(_metric(row, 'num_elements'))} elements: noisy" if is_tiny(row) else ""
    return (
        f"{row.node_name} ({row.op_name}) → {row.tensor_name}\n"
        f"rmse/scale {_fmt(row.rmse_over_scale)} · range {_fmt(row.range)} · scale {_fmt(row.scale)} · "
        f"MSE {_fmt(_metric(row, 'mean_squared_error'))} · {row.precision}{tiny}"
    )


def _badge(row: LayerRow) -> str:
    level = severity(row.rmse_over_scale)
    return f'<span class="sev sev-{level}" title="{esc(SEVERITY[level][0])}">{esc(_fmt(row.rmse_over_scale))}</span>'


def _tiny_flag(row: LayerRow) -> str:
    if not is_tiny(row):
        return ""
    return f' <span class="flag" title="fewer than {FEW_ELEMENTS} elements: rmse/scale is noisy">few elements</span>'


def _name(text: str) -> str:
    return f'<span class="name">{esc(text)}</span>' if text else '<span class="muted">—</span>'


def _worst_table(layers: Sequence[LayerRow]) -> str:
    head = (
        "<tr><th>#</th><th>op type</th><th>node</th><th>tensor</th><th>precision</th><th>scale</th>"
        "<th>zero point</th><th>rmse/scale</th><th>MSE</th><th>max abs error</th><th>elements</th></tr>"
    )
    body = []
    for i, r in enumerate(_rank_worst(layers)[:WORST_ROWS], 1):
        body.append(
            f"<tr><td class='num'>{i}</td><td>{esc(r.op_name)}</td><td class='n'>{_name(r.node_name)}</td>"
            f"<td class='n'>{_name(r.tensor_name)}</td><td>{esc(r.precision)}</td>"
            f"<td class='num'>{esc(_fmt(r.scale))}</td>"
            f"<td class='num'>{esc(r.zero_point)}</td><td class='num'>{_badge(r)}</td>"
            f"<td class='num'>{esc(_fmt(_metric(r, 'mean_squared_error')))}</td>"
            f"<td class='num'>{esc(_fmt(_metric(r, 'max_abs_error')))}</td>"
            f"<td class='num'>{esc(_fmt(_metric(r, 'num_elements'), 6))}{_tiny_flag(r)}</td></tr>"
        )
    return (
        f'<div class="scroll"><table id="worst" class="data"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _full_table(statistics: Statistics) -> str:
    metric_names = list(dict.fromkeys([*statistics.metric_names, *(m for r in statistics.layers for m in r.metrics)]))
    cols: list[tuple[str, bool]] = [
        ("#", True),
        ("op type", False),
        ("node", False),
        ("tensor", False),
        ("precision", False),
    ]
    cols += [("scale", True), ("zero point", True), ("range", True), ("rmse/scale", True)]
    cols += [(m, True) for m in metric_names] + [("covers", False)]
    head = "".join(
        f'<th tabindex="0" data-type="{"num" if num else "text"}" title="sort">{esc(c)}</th>' for c, num in cols
    )
    body = []
    for i, r in enumerate(graph_order(statistics.layers)):
        cells = [
            f"<td class='num' data-v='{i}'>{i}</td>",
            f"<td>{esc(r.op_name)}</td>",
            f"<td class='n'>{_name(r.node_name)}</td>",
            f"<td class='n'>{_name(r.tensor_name)}</td>",
            f"<td>{esc(r.precision)}</td>",
            f"<td class='num' data-v='{_num_attr(r.scale)}'>{esc(_fmt(r.scale))}</td>",
            f"<td class='num' data-v='{_num_attr(r.zero_point)}'>{esc(r.zero_point)}</td>",
            f"<td class='num' data-v='{_num_attr(r.range)}'>{esc(_fmt(r.range))}</td>",
            f"<td class='num' data-v='{_num_attr(r.rmse_over_scale)}'>{_badge(r)}{_tiny_flag(r)}</td>",
        ]
        for m in metric_names:
            v = _metric(r, m)
            cells.append(f"<td class='num' data-v='{_num_attr(v)}'>{esc(_fmt(v))}</td>")
        cells.append(f"<td>{esc(', '.join(r.covers))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<div class="table-tools"><label>Filter rows <input type="search" id="filter" '
        'placeholder="node, tensor or op type" autocomplete="off"></label>'
        '<span class="muted">click a column header to sort</span></div>'
        f'<div class="scroll tall"><table id="all" class="data sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


RANKING_ROWS = 15  # suspects shown in the report; the trace file has them all


def _ranking_table(ranking: object) -> str:
    """The first suspects of the fix ranking with the evidence behind each rank (empty when absent)."""
    if not isinstance(ranking, Sequence) or not ranking:
        return ""
    cols = [
        ("rank", "rank"),
        ("node", "node_name"),
        ("noise share", "noise_share"),
        ("group share", "group_noise_share"),
        ("per-layer rmse/scale", "per_layer_rmse/scale"),
        ("whole-model rmse/scale", "whole_model_rmse/scale"),
    ]
    body = []
    for row in ranking[:RANKING_ROWS]:
        if not isinstance(row, Mapping):
            continue
        cells = []
        for _, key in cols:
            value = row.get(key)
            if key == "node_name":
                cells.append(f"<td class='n'>{_name(str(value or ''))}</td>")
            else:
                number = float(value) if isinstance(value, (int, float)) else _NAN
                cells.append(f"<td class='num'>{esc(_fmt(number, 3))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        return ""
    head = "".join(f"<th>{esc(label)}</th>" for label, _ in cols)
    return (
        "<h3>Suspects, in the order the search tried them</h3>"
        "<p class='note'>Noise share: the part of the fully quantized model's output noise the node accounts for "
        "in the switchable graph (— where only its group was measured). The two rmse/scale columns are the "
        "debugger's statistics in both verify modes; they order the nodes of a group not measured one by one.</p>"
        f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _kv_table(items: Mapping[str, Any], cls: str = "kv") -> str:
    rows = []
    for key, value in items.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        rows.append(f"<tr><th>{esc(key)}</th><td>{esc(shown)}</td></tr>")
    return f'<table class="{cls}">{"".join(rows)}</table>'


def _provenance(prov: Mapping[str, Any]) -> str:
    if not prov:
        return '<p class="muted">No provenance was recorded with these statistics.</p>'
    versions = {k: prov[k] for k in ("quantdebug", "onnx", "onnxruntime", "numpy", "python", "machine") if k in prov}
    prints = {k: prov[k] for k in ("model_fingerprint", "dataset_fingerprint", "created") if k in prov}
    flags = prov.get("cpu_flags") or []
    configs = {k: prov[k] for k in ("quant_config", "debug_options") if isinstance(prov.get(k), Mapping)}
    known = {*versions, *prints, *configs, "cpu_flags"}
    other = {k: v for k, v in prov.items() if k not in known}
    flag_html = (
        "".join(f'<span class="chip">{esc(f)}</span>' for f in flags)
        if isinstance(flags, list) and flags
        else '<span class="muted">none recorded</span>'
    )
    parts = [
        '<div class="prov">',
        f"<div><h3>Versions</h3>{_kv_table(versions)}</div>",
        f"<div><h3>Fingerprints</h3>{_kv_table(prints)}"
        f"<h3>CPU instruction sets</h3><div class='chips'>{flag_html}</div></div>",
        "</div>",
    ]
    if other:
        parts.append(f"<h3>Other</h3>{_kv_table(other)}")
    if configs:
        inner = "".join(f"<div><h3>{esc(k)}</h3>{_kv_table(v)}</div>" for k, v in configs.items())
        parts.append(f'<details><summary>Configuration</summary><div class="prov">{inner}</div></details>')
    return "".join(parts)


def _coverage(coverage: Sequence[Mapping[str, Any]]) -> str:
    if not coverage:
        return '<p class="muted">No coverage was recorded with these statistics.</p>'
    counts = Counter(str(c.get("status", "unknown")) for c in coverage)
    chips = "".join(
        f'<span class="chip status-{esc(s) if s.isidentifier() else "other"}"><b>{n}</b> {esc(s)}</span>'
        for s, n in counts.most_common()
    )
    others = [c for c in coverage if c.get("status") != "verified"]
    if not others:
        return f'<div class="chips">{chips}</div><p>Every node was verified.</p>'
    rows = "".join(
        f"<tr><td class='n'>{_name(str(c.get('node', '')))}</td><td>{esc(c.get('op_type', ''))}</td>"
        f"<td class='n'>{_name(str(c.get('user_nodes', '')))}</td><td>{esc(c.get('status', ''))}</td>"
        f"<td>{esc(c.get('reason', ''))}</td></tr>"
        for c in others
    )
    opened = " open" if len(others) <= 10 else ""
    return (
        f'<div class="chips">{chips}</div>'
        f"<details{opened}><summary>{len(others)} node(s) not verified, and why</summary>"
        '<div class="scroll"><table class="data"><thead><tr><th>node</th><th>op type</th><th>user nodes</th>'
        f"<th>status</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table></div></details>"
    )


def _cards(statistics: Statistics) -> str:
    layers = statistics.layers
    copies = [r for r in layers if is_exact_copy(r)]
    ratios = [r.rmse_over_scale for r in layers if math.isfinite(r.rmse_over_scale) and not is_exact_copy(r)]
    suspects = [r for r in layers if r.rmse_over_scale > SUSPECT_RMSE_OVER_SCALE]
    worst = _rank_worst(layers)[0] if layers else None
    cards = [("verified layers", str(len(layers)), "")]
    cards.append(("suspects (rmse/scale > 0.7)", str(len(suspects)), "bad" if suspects else "good"))
    if worst is not None and math.isfinite(worst.rmse_over_scale):
        cards.append(
            (
                f"worst: {_short(worst.node_name or worst.tensor_name, 40)}",
                _fmt(worst.rmse_over_scale, 3),
                f"sev-{severity(worst.rmse_over_scale)}-text",
            )
        )
    if ratios:
        label = f"median rmse/scale ({len(copies)} exact-copy layers left out)" if copies else "median rmse/scale"
        cards.append((label, _fmt(pystats.median(ratios), 3), ""))
    if statistics.coverage:
        verified = sum(1 for c in statistics.coverage if c.get("status") == "verified")
        cards.append(("nodes verified", f"{verified} / {len(statistics.coverage)}", ""))
    fix = statistics.extras.get("fix")
    if isinstance(fix, Mapping) and isinstance(fix.get("fixed_quality"), (int, float)):
        cards.append(("quality after fix", _fmt(float(fix["fixed_quality"]), 4), "good"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="card-v {cls}">{esc(v)}</div><div class="card-k">{esc(k)}</div></div>'
            for k, v, cls in cards
        )
        + "</div>"
        + _card_notes(copies, [r for r in layers if has_mean_elements(r)])
    )


def _card_notes(copies: Sequence[LayerRow], varying: Sequence[LayerRow]) -> str:
    """What the summary figures leave out, and what a fractional element count means."""
    notes = []
    if copies:
        notes.append(
            f"{len(copies)} layers copy their input exactly (zero error: data movement such as Slice, Pad or "
            "Reshape); the median leaves them out, the tables keep them."
        )
    if varying:
        notes.append(
            f"num_elements of {len(varying)} layers is not a whole number: their size varies across samples "
            "(variable-length inputs) and, as in TFLite's CSV, the mean over samples is shown."
        )
    return "".join(f"<p class='muted'>{esc(n)}</p>" for n in notes)


def _legend() -> str:
    items = "".join(
        f'<span class="lg"><span class="sw sw-{k}"></span>{esc(label)}</span>'
        for k, (label, _) in SEVERITY.items()
        if k != "unknown"
    )
    return (
        f'<div class="legend">{items}'
        '<span class="lg"><span class="ln ln-ideal"></span>1/√12 ≈ 0.289 ideal rounding noise</span>'
        '<span class="lg"><span class="ln ln-suspect"></span>0.7 suspect threshold</span>'
        '<span class="lg"><span class="sw sw-faded"></span>'
        f"faded: fewer than {FEW_ELEMENTS} elements (noisy)</span></div>"
    )


_HOW_TO_READ = (
    "<p class='lead'><b>How to read rmse/scale.</b> It is the root-mean-square error between a layer's quantized "
    "output and its float twin, measured in quantization steps (the layer's scale). Ideal uniform rounding leaves "
    f"1/√12 ≈ {IDEAL_RMSE_OVER_SCALE:.3f} of a step; values near it mean the layer quantizes as well as it can. "
    f"Values much larger (above {SUSPECT_RMSE_OVER_SCALE}, the tutorial's suspect threshold) mean the layer's range "
    "or precision is the problem: outliers stretch the range, values clip, or 8 bits are too few; try a different "
    "calibration, a wider type (int16) or leaving the layer in float. A large range with a small rmse/scale is "
    "usually fine. On tiny tensors (fewer than "
    f"{FEW_ELEMENTS} elements, flagged <span class='flag'>few elements</span>) the rule of thumb is noisy.</p>"
)


def _header_meta(prov: Mapping[str, Any]) -> str:
    """One line of provenance for the header: versions, CPU, fingerprints and the main config choices."""
    bits = [f"{k} {prov[k]}" for k in ("quantdebug", "onnxruntime", "onnx", "numpy", "python") if prov.get(k)]
    flags = prov.get("cpu_flags")
    if prov.get("machine"):
        shown = ", ".join(map(str, flags)) if isinstance(flags, list) and flags else "no flags recorded"
        bits.append(f"{prov['machine']} ({shown})")
    for key, label in (("model_fingerprint", "model"), ("dataset_fingerprint", "data")):
        if prov.get(key):
            bits.append(f"{label} {_short(str(prov[key]), 13)}")
    cfg = prov.get("quant_config")
    if isinstance(cfg, Mapping):
        act, wt = cfg.get("activation_type"), cfg.get("weight_type")
        if act and wt:
            granularity = "per-channel" if cfg.get("per_channel") else "per-tensor"
            bits.append(f"{act} activations, {wt} weights, {cfg.get('calibration_method', '?')}, {granularity}")
    return " · ".join(bits)


def _impact_color(impact: float) -> str:
    """White to red as a layer's share of the output noise goes from 0 to 1 (grey where not measured)."""
    if not math.isfinite(impact):
        return "#c4c9d0"
    share = min(max(impact, 0.0), 1.0) ** 0.5  # small shares stay visible
    return f"#{255 - round(57 * share):02x}{235 - round(195 * share):02x}{235 - round(195 * share):02x}"


def _culprits(statistics: Statistics, ordered: Sequence[LayerRow], tips: Sequence[str]) -> str:
    """The culprits: ranked table with impact bars, reasons and the changes as code; rmse/scale coloured by impact."""
    culprits = statistics.extras.get("culprits")
    if not isinstance(culprits, Mapping) or not isinstance(culprits.get("rows"), Sequence):
        return ""
    rows = [r for r in culprits["rows"] if isinstance(r, Mapping)]
    chart = ""
    if ordered:
        chart = _bar_chart(
            ordered,
            [r.rmse_over_scale for r in ordered],
            label="rmse/scale per layer, coloured by impact",
            ylabel="rmse / scale",
            colors=[_impact_color(r.impact) for r in ordered],
            tooltips=[f"{t}\nimpact {_fmt(r.impact, 3)}" for t, r in zip(tips, ordered)],
            refs=[(IDEAL_RMSE_OVER_SCALE, "0.289 ideal", "ideal")],
        )
    return (
        "<p class='note'>Impact: the larger of the share of the fully quantized model's output noise a layer makes "
        "when it alone is quantized and the share that leaving it alone in float removes, measured on "
        f"{esc(culprits.get('samples', '?'))} debug samples. The suggested change is the call that applies "
        "the lever <code>fix</code> would try.</p>"
        f'<div class="scroll">{culprits_table(rows, WORST_ROWS)}</div>{denylist_line(culprits)}'
        + (f"<h3>Error per layer, coloured by impact</h3><div class='fig'>{chart}</div>" if chart else "")
    )


def _section(sid: str, title: str, body: str, intro: str = "") -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{intro}{body}</section>'


def render_html(statistics: Statistics, *, title: str | None = None) -> str:
    """The report as one self-contained HTML document (a string)."""
    layers = statistics.layers
    ordered = graph_order(layers)
    tips = [_tooltip(r) for r in ordered]
    prov = statistics.provenance
    heading = title or "Quantization debug report"
    mode = "whole model" if statistics.verify_mode == "whole_model" else "per layer"
    sub = [f"verify mode: {mode}", f"{len(layers)} verified layer(s)"]
    if prov.get("created"):
        sub.append(f"run {prov['created']}")
    meta = _header_meta(prov)
    meta_html = f'<p class="meta">{esc(meta)}</p>' if meta else ""

    nav: list[tuple[str, str]] = [("summary", "Summary"), ("charts", "Charts")]
    sections = [_section("summary", "Summary", _cards(statistics) + _HOW_TO_READ)]
    culprits = _culprits(statistics, ordered, tips)
    if culprits:  # the report opens with what breaks the model, before TFLite's per-layer view
        nav.insert(0, ("culprits", "Culprits"))
        sections.insert(0, _section("culprits", "Likely culprits (by effect on the outputs)", culprits))

    if layers:
        ratios = [r.rmse_over_scale for r in ordered]
        levels = [severity(v) for v in ratios]
        colors = [SEVERITY[lv][1] for lv in levels]
        classes = [f"sev-{lv}{' tiny' if is_tiny(r) else ''}" for lv, r in zip(levels, ordered, strict=True)]
        rmse_chart = _bar_chart(
            ordered,
            ratios,
            label="rmse/scale per layer",
            ylabel="rmse / scale",
            colors=colors,
            tooltips=tips,
            refs=[(IDEAL_RMSE_OVER_SCALE, "0.289 ideal", "ideal"), (SUSPECT_RMSE_OVER_SCALE, "0.7 suspect", "suspect")],
            log=True if max((v for v in ratios if math.isfinite(v)), default=0) > 20 else False,
            classes=classes,
        )
        range_chart = _bar_chart(
            ordered,
            [r.range for r in ordered],
            label="quantization range per layer",
            ylabel="range = (qmax − qmin) × scale",
            colors=colors,
            tooltips=tips,
            classes=classes,
        )
        charts = (
            "<h3>Error per layer: rmse / scale</h3>" + _legend() + f'<div class="fig">{rmse_chart}</div>'
            "<h3>Range per layer</h3><p class='note'>Bars take the colour of the layer's rmse/scale; "
            "a very wide range next to a red bar points at outliers that stretch the scale.</p>"
            f'<div class="fig">{range_chart}</div>'
        )
        sections.append(_section("charts", "Charts", charts))
        if statistics.verify_mode == "whole_model":
            nav.append(("propagation", "Propagation"))
            sections.append(
                _section(
                    "propagation",
                    "Error propagation along the graph",
                    f'<div class="fig">{_propagation_chart(ordered, tips)}</div>',
                    "<p class='note'>Whole-model mode runs the fully quantized model, so each layer's error includes "
                    "what earlier layers passed on. A step up marks the layer that adds the most.</p>",
                )
            )
        nav.append(("worst-layers", "Worst layers"))
        sections.append(_section("worst-layers", "Worst layers", _worst_table(layers)))
    else:
        sections.append(
            _section("charts", "Charts", '<p class="muted">No layer was verified, so there is nothing to chart.</p>')
        )

    hists = statistics.extras.get("histograms")
    if isinstance(hists, Mapping) and hists:
        figs: list[str] = []
        for r in _rank_worst(layers):
            if len(figs) >= MAX_HISTOGRAMS:
                break
            h = hists.get(r.tensor_name)
            chart = _histogram_chart(r.tensor_name, h) if isinstance(h, Mapping) else ""
            if chart:
                figs.append(
                    f'<figure class="hist-fig">{chart}<figcaption>{_name(r.tensor_name)} '
                    f"<span class='muted'>({esc(r.node_name)})</span> {_badge(r)}</figcaption></figure>"
                )
        if figs:
            nav.append(("histograms", "Histograms"))
            legend = (
                '<div class="legend"><span class="lg"><span class="sw sw-float"></span>float</span>'
                '<span class="lg"><span class="sw sw-quant"></span>quantized</span></div>'
            )
            sections.append(
                _section(
                    "histograms",
                    "Float vs quantized values (worst tensors)",
                    legend + f'<div class="hist-grid">{"".join(figs)}</div>',
                )
            )

    if statistics.model_statistics:
        nav.append(("model-metrics", "Model metrics"))
        items = {
            k: _fmt(float(v), 6) if isinstance(v, (int, float)) else v for k, v in statistics.model_statistics.items()
        }
        sections.append(_section("model-metrics", "Model metrics", _kv_table(items, "kv wide")))

    fix = statistics.extras.get("fix")
    if isinstance(fix, Mapping):
        chart = _fix_chart(fix)
        if chart:
            nav.append(("fix", "Fix search"))
            sections.append(
                _section(
                    "fix",
                    "Fix search trace",
                    f'<div class="fig">{chart}</div>' + _ranking_table(fix.get("ranking")),
                    "<p class='note'>Each dot is one configuration tried by <code>fix</code>: filled dots met "
                    "the target, hollow ones did not; the line joins those that met it.</p>",
                )
            )

    if layers:
        nav.append(("all-layers", "All layers"))
        sections.append(_section("all-layers", "All layers", _full_table(statistics)))
    nav.append(("coverage", "Coverage"))
    sections.append(_section("coverage", "Coverage", _coverage(statistics.coverage)))
    nav.append(("provenance", "Provenance"))
    sections.append(_section("provenance", "Provenance", _provenance(prov)))

    nav_html = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    csp = (
        f"default-src 'none'; script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_STYLE)}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="quantdebug {esc(prov.get("quantdebug", ""))}">'
        f"<title>{esc(heading)}</title><style>{_STYLE}</style></head><body>"
        f'<header><div class="wrap"><h1>{esc(heading)}</h1><p class="sub">{esc(" · ".join(sub))}</p>{meta_html}'
        f"<nav>{nav_html}</nav></div></header>"
        f'<main class="wrap">{"".join(sections)}</main>'
        f'<footer class="wrap">Generated by quantdebug at {esc(generated)} from saved statistics; '
        "this file is self-contained and works offline.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def save_html(statistics: Statistics, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write `render_html` to ``path`` atomically; returns the path."""
    out = Path(path)
    _io.write_text(out, render_html(statistics, title=title))
    return out


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


# Table sorting and filtering. It reads the DOM only; no data is ever placed in this script.
_SCRIPT = """
(function () {
  "use strict";
  function key(cell, numeric) {
    if (!numeric) { return cell.textContent.trim().toLowerCase(); }
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? null : parseFloat(v);
  }
  function sortBy(table, th, index) {
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== (numeric ? "descending" : "ascending");
    var dir = numeric ? (asc ? -1 : 1) : (asc ? 1 : -1);
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return x < y ? -dir : dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, index) {
      th.addEventListener("click", function () { sortBy(table, th, index); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, index); }
      });
    });
  });
  var filter = document.getElementById("filter");
  var all = document.getElementById("all");
  if (filter && all) {
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      Array.prototype.forEach.call(all.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
})();
"""

_SEV_CSS = "".join(
    f".sev-{k}{{background:{c};}}.sw-{k}{{background:{c};}}.sev-{k}-text{{color:{c};}}"
    for k, (_, c) in SEVERITY.items()
)

_STYLE = (
    """
:root{--fg:#1f2328;--muted:#5f6b7a;--line:#d8dee4;--bg:#ffffff;--panel:#f6f8fa;--accent:#2f5fa7;
--sans:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",Arial,sans-serif;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font-family:var(--sans);font-size:15px;line-height:1.5;color:var(--fg);background:var(--bg)}
.wrap{max-width:1200px;margin:0 auto;padding:0 24px}
header{background:#17263c;color:#f3f6fa;padding:22px 0 0;margin-bottom:8px}
header h1{margin:0 0 2px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header .sub{margin:0 0 2px;color:#c9d3e0;font-size:14px}
header .meta{margin:0 0 14px;color:#93a3b8;font-size:12.5px}
nav{display:flex;flex-wrap:wrap;gap:2px}
nav a{color:#dbe4ef;text-decoration:none;font-size:13.5px;padding:7px 12px;border-radius:6px 6px 0 0}
nav a:hover{background:#24385a;color:#fff}
section{padding:18px 0 10px;border-bottom:1px solid var(--line)}
h2{font-size:20px;margin:8px 0 12px;font-weight:650}
h3{font-size:15px;margin:18px 0 8px;font-weight:650;color:#2b3440}
p{margin:8px 0}
.lead{max-width:78ch;color:#2b3440}
.note{color:var(--muted);font-size:13.5px;max-width:90ch}
.muted{color:var(--muted)}
code{font-family:var(--mono);font-size:.92em;background:var(--panel);padding:1px 4px;border-radius:4px}
code.change{user-select:all;white-space:pre-wrap}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:6px 0 14px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card-v{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums;overflow:hidden;text-overflow:ellipsis}
.card-k{font-size:12.5px;color:var(--muted);overflow-wrap:anywhere}
.card-v.bad{color:#c0392b}.card-v.good{color:#2e7d4f}
.fig{border:1px solid var(--line);border-radius:10px;padding:8px 6px 4px;background:#fff}
svg.chart{display:block;width:100%;height:auto;font-family:var(--sans)}
svg .grid{stroke:#e6eaef;stroke-width:1}
svg .axis{stroke:#8c959f;stroke-width:1}
svg .tick{font-size:11px;fill:#57606a}
svg .xlabel{font-size:10.5px;fill:#3d4650;font-family:var(--mono)}
svg .axis-title{font-size:12px;fill:#3d4650}
svg .ref{stroke-width:1.4;stroke-dasharray:6 4}
svg .ref.ideal{stroke:#1f2328}svg .ref.suspect{stroke:#c0392b}svg .ref.fixed{stroke:#2f5fa7}
svg .reflabel{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg .reflabel.ideal{fill:#1f2328}svg .reflabel.suspect{fill:#c0392b}svg .reflabel.fixed{fill:#2f5fa7}
svg rect.bar:hover,svg circle.dot:hover,svg circle.pt:hover{opacity:.7}
svg rect.bar.tiny{fill-opacity:.45}
svg .series{fill:none;stroke-width:1.6}
svg .path-accepted{stroke:#2f5fa7;stroke-opacity:.6}
svg .pt.accepted{fill:#2f5fa7;stroke:#fff;stroke-width:1}
svg .pt.rejected{fill:#fff;stroke:#8c959f;stroke-width:1.6}
svg .h-float{fill:#4a78b5;fill-opacity:.28;stroke:#4a78b5;stroke-width:1.2}
svg .h-quant{fill:none;stroke:#e08a1e;stroke-width:1.4}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;color:#3d4650;margin:4px 0 8px}
.lg{display:inline-flex;align-items:center;gap:6px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px}
.sw-faded{background:#3f9c6d;opacity:.45}
.sw-float{background:#a9bfdd;border:1px solid #4a78b5}.sw-quant{background:#fff;border:2px solid #e08a1e}
.ln{display:inline-block;width:22px;border-top:2px dashed}
.ln-ideal{border-color:#1f2328}.ln-suspect{border-color:#c0392b}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:10px}
.scroll.tall{max-height:640px;overflow-y:auto}
table.data{border-collapse:collapse;width:100%;font-size:13.5px}
table.data th,table.data td{padding:6px 10px;text-align:left;border-bottom:1px solid #eef1f4;vertical-align:top}
table.data thead th{position:sticky;top:0;background:var(--panel);font-weight:600;white-space:nowrap;
  border-bottom:1px solid var(--line)}
table.data tbody tr:hover{background:#f5f8fc}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲";font-size:10px}
table.sortable th[aria-sort=descending]::after{content:" ▼";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-family:var(--mono);font-size:12.5px;overflow-wrap:anywhere}
table.data td.n{min-width:15ch;max-width:44ch}
.sev{display:inline-block;min-width:52px;text-align:center;color:#fff;border-radius:999px;padding:0 8px;
  font-weight:600;font-size:12.5px}
.sev-watch{color:#2b2100}
.flag{display:inline-block;font-size:11px;color:#7a4d00;background:#fff4d6;border:1px solid #f0d28a;border-radius:4px;
  padding:0 5px;white-space:nowrap}
.table-tools{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin:0 0 8px;font-size:13.5px}
.table-tools input{font:inherit;padding:5px 9px;border:1px solid var(--line);border-radius:6px;min-width:260px}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 10px}
.chip{font-size:12.5px;background:var(--panel);border:1px solid var(--line);border-radius:999px;padding:1px 10px}
.chip.status-verified{background:#e6f4ec;border-color:#b7dfc6}
table.kv{border-collapse:collapse;font-size:13.5px}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:3px 18px 3px 0;vertical-align:top;
  white-space:nowrap}
table.kv td{padding:3px 0;font-family:var(--mono);font-size:12.5px;word-break:break-all}
.prov{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 32px}
details{margin:10px 0}
summary{cursor:pointer;font-weight:600;color:var(--accent)}
.hist-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
figure.hist-fig{margin:0;border:1px solid var(--line);border-radius:10px;padding:8px}
figure.hist-fig figcaption{font-size:13px;padding:4px 6px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
footer{color:var(--muted);font-size:12.5px;padding:18px 24px 40px}
@media (max-width:700px){.wrap{padding:0 12px}header h1{font-size:21px}.card-v{font-size:20px}}
@media print{nav,.table-tools{display:none}.scroll.tall{max-height:none}}
"""
    + _SEV_CSS
    + "\n"
)
