"""HTML tables: the report's layer, ranking, coverage and provenance tables, and the culprits, Statistics and
FixResult tables shared with notebooks (``_repr_html_``).

Names come from untrusted models: every piece of text goes through ``html.escape``. Impact bars
are inline SVG (no style attributes, which the report's Content-Security-Policy would block).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.fix import REASONS, number
from quantdebug.pipeline.results import LayerRow, Statistics
from quantdebug.report._format import (
    CULPRITS_TITLE,
    badge,
    esc,
    fmt,
    metric,
    name_cell,
    num_attr,
    rank_worst,
    tiny_flag,
)
from quantdebug.report._rows import graph_order

BAR_WIDTH = 120  # px of an impact of 1.0
NOTEBOOK_ROWS = 15  # rows a notebook shows; the frame itself has them all
WORST_ROWS = 10  # rows of the report's worst-layers and culprits tables
RANKING_ROWS = 15  # suspects shown in the report; the trace file has them all


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
        f'<text x="{BAR_WIDTH + 4}" y="10" font-size="10">{esc(_fmt(impact, 2))}</text></svg>'
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
            f"<tr><td class='num'>{i}</td><td class='n'><span class='name'>{esc(row.get('node_name', ''))}</span></td>"
            f"<td>{esc(row.get('op_name', ''))}</td><td>{impact_bar(number(row.get('impact')))}</td>"
            f"<td class='num'>{esc(_fmt(row.get('quantized_alone_sqnr_db')))}</td>"
            f"<td class='num'>{esc(_fmt(row.get('float_alone_sqnr_db')))}</td>"
            f"<td class='num'>{esc(_fmt(row.get('per_layer_rmse/scale')))}</td>"
            f"<td class='num'>{esc(_fmt(row.get('whole_model_rmse/scale')))}</td>"
            f"<td title='{esc(row.get('detail', ''))}'>{esc(REASONS.get(reason, reason))}</td>"
            f"<td><code class='change'>{esc(row.get('suggested_change', ''))}</code></td></tr>"
        )
    return f'<table class="data culprits"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def denylist_line(measured: Mapping[str, Any]) -> str:
    names = [str(n) for n in measured.get("denylist", [])]
    if not names:
        return "<p>Suggested denylist: none (no layer holds a measurable share of the output noise).</p>"
    code = f"DebugOptions(denylisted_nodes={names!r})"
    removes = number(measured.get("denylist_removes"))
    return (
        f"<p>Suggested denylist: {len(names)} layer(s), removing {esc(_fmt(100 * removes, 3))}% of the output "
        f"noise: <code class='change'>{esc(code)}</code></p>"
    )


def statistics_html(layers: Sequence[Any], verify_mode: str, culprits: Mapping[str, Any] | None) -> str:
    """A notebook view of a Statistics: the culprits when measured, then the worst layers by rmse/scale."""
    worst = sorted(layers, key=lambda r: -r.rmse_over_scale if math.isfinite(r.rmse_over_scale) else math.inf)
    body = []
    for r in worst[:NOTEBOOK_ROWS]:
        body.append(
            f"<tr><td>{esc(r.op_name)}</td><td><span class='name'>{esc(r.node_name)}</span></td>"
            f"<td class='num'>{esc(_fmt(r.rmse_over_scale))}</td><td class='num'>{esc(_fmt(r.range))}</td>"
            f"<td>{impact_bar(r.impact) if math.isfinite(r.impact) else '—'}</td></tr>"
        )
    parts = [f"<div><p>{len(layers)} verified layers ({esc(verify_mode.replace('_', '-'))})</p>"]
    if culprits:
        parts.append(f"<h4>{CULPRITS_TITLE}</h4>")
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
        f"<tr><td class='num'>{esc(r.get('rank', ''))}</td><td><span class='name'>{esc(r.get('node_name', ''))}"
        f"</span></td><td>{impact_bar(number(r.get('noise_share')))}</td></tr>"
        for r in ranking[:NOTEBOOK_ROWS]
    )
    table = (
        "<table class='data'><thead><tr><th>rank</th><th>node</th><th>noise share</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f"<div><pre>{esc(summary)}</pre>{table}</div>"


# -- the report's tables -----------------------------------------------------------------------
def worst_table(layers: Sequence[LayerRow]) -> str:
    head = (
        "<tr><th>#</th><th>op type</th><th>node</th><th>tensor</th><th>precision</th><th>scale</th>"
        "<th>zero point</th><th>rmse/scale</th><th>MSE</th><th>max abs error</th><th>elements</th></tr>"
    )
    body = []
    for i, r in enumerate(rank_worst(layers)[:WORST_ROWS], 1):
        body.append(
            f"<tr><td class='num'>{i}</td><td>{esc(r.op_name)}</td><td class='n'>{name_cell(r.node_name)}</td>"
            f"<td class='n'>{name_cell(r.tensor_name)}</td><td>{esc(r.precision)}</td>"
            f"<td class='num'>{esc(fmt(r.scale))}</td>"
            f"<td class='num'>{esc(r.zero_point)}</td><td class='num'>{badge(r)}</td>"
            f"<td class='num'>{esc(fmt(metric(r, 'mean_squared_error')))}</td>"
            f"<td class='num'>{esc(fmt(metric(r, 'max_abs_error')))}</td>"
            f"<td class='num'>{esc(fmt(metric(r, 'num_elements'), 6))}{tiny_flag(r)}</td></tr>"
        )
    return (
        f'<div class="scroll"><table id="worst" class="data"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def full_table(statistics: Statistics) -> str:
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
            f"<td class='n'>{name_cell(r.node_name)}</td>",
            f"<td class='n'>{name_cell(r.tensor_name)}</td>",
            f"<td>{esc(r.precision)}</td>",
            f"<td class='num' data-v='{num_attr(r.scale)}'>{esc(fmt(r.scale))}</td>",
            f"<td class='num' data-v='{num_attr(r.zero_point)}'>{esc(r.zero_point)}</td>",
            f"<td class='num' data-v='{num_attr(r.range)}'>{esc(fmt(r.range))}</td>",
            f"<td class='num' data-v='{num_attr(r.rmse_over_scale)}'>{badge(r)}{tiny_flag(r)}</td>",
        ]
        for m in metric_names:
            v = metric(r, m)
            cells.append(f"<td class='num' data-v='{num_attr(v)}'>{esc(fmt(v))}</td>")
        cells.append(f"<td>{esc(', '.join(r.covers))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<div class="table-tools"><label>Filter rows <input type="search" id="filter" '
        'placeholder="node, tensor or op type" autocomplete="off"></label>'
        '<span class="muted">click a column header to sort</span></div>'
        f'<div class="scroll tall"><table id="all" class="data sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def ranking_table(ranking: object) -> str:
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
                cells.append(f"<td class='n'>{name_cell(str(value or ''))}</td>")
            else:
                x = float(value) if isinstance(value, (int, float)) else math.nan
                cells.append(f"<td class='num'>{esc(fmt(x, 3))}</td>")
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


def weight_changes_table(records: object) -> str:
    """What the weight levers the fix kept did (``qd.weight_changes`` records), one row per record
    (empty when there are none)."""
    if not isinstance(records, Sequence) or isinstance(records, str):
        return ""
    body = []
    for r in records:
        if not isinstance(r, Mapping):
            continue
        nodes = r.get("nodes") or []
        nodes = [str(n) for n in nodes] if isinstance(nodes, Sequence) and not isinstance(nodes, str) else []
        skipped = r.get("skipped") or []
        n_skipped = len(skipped) if isinstance(skipped, Sequence) and not isinstance(skipped, str) else 0
        body.append(
            f"<tr><td>{esc(str(r.get('kind', '?')))}</td><td>{esc(str(r.get('status', '')))}</td>"
            f"<td class='num'>{len(nodes)}</td><td class='num'>{n_skipped}</td>"
            f"<td class='n'>{', '.join(name_cell(n) for n in nodes)}</td>"
            f"<td>{esc(str(r.get('reason', '') or ''))}</td></tr>"
        )
    if not body:
        return ""
    head = "".join(f"<th>{esc(c)}</th>" for c in ("change", "status", "nodes", "skipped", "which nodes", "reason"))
    return (
        "<h3>Weight changes the fix kept</h3>"
        "<p class='note'>These change the model's weights, so onnxruntime's settings file cannot express them: "
        "deploy the fixed model itself (or quantize the float model <code>save_float_model</code> writes).</p>"
        f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def kv_table(items: Mapping[str, Any], cls: str = "kv") -> str:
    rows = []
    for key, value in items.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        rows.append(f"<tr><th>{esc(key)}</th><td>{esc(shown)}</td></tr>")
    return f'<table class="{cls}">{"".join(rows)}</table>'


def provenance_table(prov: Mapping[str, Any]) -> str:
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
        f"<div><h3>Versions</h3>{kv_table(versions)}</div>",
        f"<div><h3>Fingerprints</h3>{kv_table(prints)}"
        f"<h3>CPU instruction sets</h3><div class='chips'>{flag_html}</div></div>",
        "</div>",
    ]
    if other:
        parts.append(f"<h3>Other</h3>{kv_table(other)}")
    if configs:
        inner = "".join(f"<div><h3>{esc(k)}</h3>{kv_table(v)}</div>" for k, v in configs.items())
        parts.append(f'<details><summary>Configuration</summary><div class="prov">{inner}</div></details>')
    return "".join(parts)


def coverage_table(coverage: Sequence[Mapping[str, Any]]) -> str:
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
        f"<tr><td class='n'>{name_cell(str(c.get('node', '')))}</td><td>{esc(c.get('op_type', ''))}</td>"
        f"<td class='n'>{name_cell(str(c.get('user_nodes', '')))}</td><td>{esc(c.get('status', ''))}</td>"
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
