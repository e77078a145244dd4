"""HTML tables of the culprits, Statistics and FixResult, for the report and for notebooks (``_repr_html_``).

Names come from untrusted models: every piece of text goes through ``html.escape``. Impact bars
are inline SVG (no style attributes, which the report's Content-Security-Policy would block).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.fix._culprits import REASONS, number

BAR_WIDTH = 120  # px of an impact of 1.0
NOTEBOOK_ROWS = 15  # rows a notebook shows; the frame itself has them all


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    x = number(value) if not isinstance(value, (int, float)) else float(value)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def impact_bar(impact: float) -> str:
    """An inline SVG bar of ``impact`` (0..1) with its value as text beside it."""
    share = min(max(impact, 0.0), 1.0) if math.isfinite(impact) else 0.0
    return (
        f'<svg class="impact" width="{BAR_WIDTH + 44}" height="12" role="img" aria-label="impact {_fmt(impact)}">'
        f'<rect x="0" y="1" width="{BAR_WIDTH}" height="10" fill="#eceff3"/>'
        f'<rect x="0" y="1" width="{share * BAR_WIDTH:.1f}" height="10" fill="#c62828"/>'
        f'<text x="{BAR_WIDTH + 4}" y="10" font-size="10">{_esc(_fmt(impact, 2))}</text></svg>'
    )


def culprits_table(rows: Sequence[Mapping[str, Any]], limit: int | None = None) -> str:
    """The culprits as an HTML table: rank, node, op, impact bar, both SQNRs, both rmse/scale, reason, change."""
    head = (
        "<tr><th>#</th><th>node</th><th>op</th><th>impact</th><th>SQNR quantized alone (dB)</th>"
        "<th>SQNR float alone (dB)</th><th>rmse/scale per layer</th><th>rmse/scale whole model</th>"
        "<th>reason</th><th>suggested change</th></tr>"
    )
    body = []
    for i, row in enumerate(rows[:limit] if limit else rows, 1):
        reason = str(row.get("reason", ""))
        body.append(
            f"<tr><td class='num'>{i}</td><td class='n'><span class='name'>{_esc(row.get('node_name', ''))}</span></td>"
            f"<td>{_esc(row.get('op_name', ''))}</td><td>{impact_bar(number(row.get('impact')))}</td>"
            f"<td class='num'>{_esc(_fmt(row.get('quantized_alone_sqnr_db')))}</td>"
            f"<td class='num'>{_esc(_fmt(row.get('float_alone_sqnr_db')))}</td>"
            f"<td class='num'>{_esc(_fmt(row.get('per_layer_rmse/scale')))}</td>"
            f"<td class='num'>{_esc(_fmt(row.get('whole_model_rmse/scale')))}</td>"
            f"<td title='{_esc(row.get('detail', ''))}'>{_esc(REASONS.get(reason, reason))}</td>"
            f"<td><code class='change'>{_esc(row.get('suggested_change', ''))}</code></td></tr>"
        )
    return f'<table class="data culprits"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def denylist_line(measured: Mapping[str, Any]) -> str:
    names = [str(n) for n in measured.get("denylist", [])]
    if not names:
        return "<p>Suggested denylist: none (no layer holds a measurable share of the output noise).</p>"
    code = f"DebugOptions(denylisted_nodes={names!r})"
    removes = number(measured.get("denylist_removes"))
    return (
        f"<p>Suggested denylist: {len(names)} layer(s), removing {_esc(_fmt(100 * removes, 3))}% of the output "
        f"noise: <code class='change'>{_esc(code)}</code></p>"
    )


def statistics_html(layers: Sequence[Any], verify_mode: str, culprits: Mapping[str, Any] | None) -> str:
    """A notebook view of a Statistics: the culprits when measured, then the worst layers by rmse/scale."""
    worst = sorted(layers, key=lambda r: -r.rmse_over_scale if math.isfinite(r.rmse_over_scale) else math.inf)
    body = []
    for r in worst[:NOTEBOOK_ROWS]:
        body.append(
            f"<tr><td>{_esc(r.op_name)}</td><td><span class='name'>{_esc(r.node_name)}</span></td>"
            f"<td class='num'>{_esc(_fmt(r.rmse_over_scale))}</td><td class='num'>{_esc(_fmt(r.range))}</td>"
            f"<td>{impact_bar(r.impact) if math.isfinite(r.impact) else '—'}</td></tr>"
        )
    parts = [f"<div><p>{len(layers)} verified layers ({_esc(verify_mode.replace('_', '-'))})</p>"]
    if culprits:
        parts.append("<h4>Likely culprits (by effect on the outputs)</h4>")
        parts.append(culprits_table(list(culprits.get("rows", [])), NOTEBOOK_ROWS) + denylist_line(culprits))
    parts.append("<h4>Worst layers by rmse/scale (TFLite's view)</h4>")
    parts.append(
        "<table class='data'><thead><tr><th>op</th><th>node</th><th>rmse/scale</th><th>range</th><th>impact</th>"
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    return "".join(parts)


def fix_result_html(summary: str, ranking: Sequence[Mapping[str, Any]]) -> str:
    """A notebook view of a FixResult: its summary, then the first suspects with their noise shares."""
    rows = "".join(
        f"<tr><td class='num'>{_esc(r.get('rank', ''))}</td><td><span class='name'>{_esc(r.get('node_name', ''))}"
        f"</span></td><td>{impact_bar(number(r.get('noise_share')))}</td></tr>"
        for r in ranking[:NOTEBOOK_ROWS]
    )
    table = (
        "<table class='data'><thead><tr><th>rank</th><th>node</th><th>noise share</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f"<div><pre>{_esc(summary)}</pre>{table}</div>"
