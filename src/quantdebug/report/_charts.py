"""The report's charts, drawn here as inline SVG (no network, no plotting library): bars per layer, the
whole-model error propagation, float vs quantized histograms and the fix search trace.

Every label comes from an untrusted model and goes through `esc`; no style attributes (the page's
Content-Security-Policy allows only its own stylesheet), only classes and presentation attributes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantdebug.pipeline.results import LayerRow
from quantdebug.report._format import esc, finite_or, fmt, metric, short
from quantdebug.thresholds import IDEAL_RMSE_OVER_SCALE, SUSPECT_RMSE_OVER_SCALE

# the dashed reference lines of the rmse/scale charts: (value, label, css class)
IDEAL_LINE = (IDEAL_RMSE_OVER_SCALE, f"{IDEAL_RMSE_OVER_SCALE:.3f} ideal", "ideal")
SUSPECT_LINE = (SUSPECT_RMSE_OVER_SCALE, f"{SUSPECT_RMSE_OVER_SCALE:g} suspect", "suspect")


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


def bar_chart(
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
    names = [short(r.node_name or r.tensor_name, 18) for r in rows]
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


def propagation_chart(rows: Sequence[LayerRow], tooltips: Sequence[str]) -> str:
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
        [metric(r, "mean_squared_error") for r in rows],
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
        refs=[IDEAL_LINE, SUSPECT_LINE],
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


def histogram_chart(name: str, hist: Mapping[str, Any]) -> str:
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
            y = ya(finite_or(c, 0.0))
            d.append(f"L{xa(edges[i]):.1f},{y:.1f}L{xa(edges[i + 1]):.1f},{y:.1f}")
        d.append(f"L{xa(edges[-1]):.1f},{ya(0):.1f}Z")
        parts.append(f'<path class="{cls}" d="{"".join(d)}"><title>{esc(key)} values of {esc(name)}</title></path>')
    for t in xa.ticks():
        parts.append(
            f'<text class="tick" x="{xa(t):.1f}" y="{y1 + 15:.1f}" text-anchor="middle">{esc(fmt(t, 3))}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>')
    parts.append(f'<text class="axis-title" x="{(x0 + x1) / 2:.1f}" y="{height - 3}" text-anchor="middle">value</text>')
    parts.append("</svg>")
    return "".join(parts)


def fix_chart(fix: Mapping[str, Any]) -> str:
    """The fix search: quality against the number of nodes left out of int8, one dot per try."""
    trace = [t for t in fix.get("trace", []) if isinstance(t, Mapping)]
    pts: list[tuple[float, float, bool, str]] = []
    for i, item in enumerate(trace):
        try:
            q, n = float(item.get("quality", math.nan)), float(item.get("non_int8_nodes", math.nan))
        except (TypeError, ValueError):
            continue
        if not (math.isfinite(q) and math.isfinite(n)):
            continue
        changes = item.get("changes") or []
        change_text = "; ".join(str(c) for c in changes) if isinstance(changes, list) else str(changes)
        met = bool(item.get("meets_target", item.get("accepted")))  # fix traces say meets_target
        tip = (
            f"try {i + 1}: quality {fmt(q)}, {int(n)} non-int8 node(s), size {item.get('size', '—')}, "
            f"{'meets the target' if met else 'misses the target'}"
            + (f"\nchanges: {short(change_text, 300)}" if change_text else "")
        )
        pts.append((n, q, met, tip))
    refs = []
    for key, text, cls in (
        ("float_quality", "float", "ideal"),
        ("int8_quality", "int8", "suspect"),
        ("fixed_quality", "fixed", "fixed"),
    ):
        try:
            v = float(fix.get(key, math.nan))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            refs.append((v, f"{text} {fmt(v)}", cls))
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


def impact_color(impact: float) -> str:
    """White to red as a layer's share of the output noise goes from 0 to 1 (grey where not measured)."""
    if not math.isfinite(impact):
        return "#c4c9d0"
    share = min(max(impact, 0.0), 1.0) ** 0.5  # small shares stay visible
    return f"#{255 - round(57 * share):02x}{235 - round(195 * share):02x}{235 - round(195 * share):02x}"
