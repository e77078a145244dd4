"""The report page: its sections in order and the HTML skeleton around them, rendered only from a saved
`Statistics` object.

One self-contained file and no network: charts are inline SVG (`_charts`), the stylesheet and the
one small script come from ``assets/`` and are pinned by a Content-Security-Policy hash (`_assets`).
Every name comes from an untrusted model, so every piece of text and every attribute is escaped; no
script is ever built from data.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Mapping
from pathlib import Path

from quantdebug.pipeline.results import Statistics
from quantdebug.report._assets import content_security_policy, script, style
from quantdebug.report._charts import (
    IDEAL_LINE,
    SUSPECT_LINE,
    bar_chart,
    fix_chart,
    histogram_chart,
    propagation_chart,
)
from quantdebug.report._format import CULPRITS_TITLE, badge, esc, fmt, name_cell, rank_worst, tooltip
from quantdebug.report._rows import graph_order, is_tiny
from quantdebug.report._sections import HOW_TO_READ, cards, culprits_section, header_meta, legend
from quantdebug.report._tables import (
    coverage_table,
    full_table,
    kv_table,
    provenance_table,
    ranking_table,
    weight_changes_table,
    worst_table,
)
from quantdebug.support import write_text
from quantdebug.thresholds import SEVERITY, severity

MAX_HISTOGRAMS = 6  # histogram figures on the page, worst tensors first


def _section(sid: str, title: str, body: str, intro: str = "") -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{intro}{body}</section>'


def _histograms_section(statistics: Statistics) -> str:
    """Float vs quantized histograms of the worst tensors that have one saved (empty when none)."""
    hists = statistics.extras.get("histograms")
    if not isinstance(hists, Mapping) or not hists:
        return ""
    figs: list[str] = []
    for r in rank_worst(statistics.layers):
        if len(figs) >= MAX_HISTOGRAMS:
            break
        h = hists.get(r.tensor_name)
        chart = histogram_chart(r.tensor_name, h) if isinstance(h, Mapping) else ""
        if chart:
            figs.append(
                f'<figure class="hist-fig">{chart}<figcaption>{name_cell(r.tensor_name)} '
                f"<span class='muted'>({esc(r.node_name)})</span> {badge(r)}</figcaption></figure>"
            )
    if not figs:
        return ""
    swatches = (
        '<div class="legend"><span class="lg"><span class="sw sw-float"></span>float</span>'
        '<span class="lg"><span class="sw sw-quant"></span>quantized</span></div>'
    )
    return _section(
        "histograms",
        "Float vs quantized values (worst tensors)",
        swatches + f'<div class="hist-grid">{"".join(figs)}</div>',
    )


def _fix_section(statistics: Statistics) -> str:
    """The fix search: its trace as a chart and the first suspects of its ranking (empty without a trace)."""
    fix = statistics.extras.get("fix")
    if not isinstance(fix, Mapping):
        return ""
    chart = fix_chart(fix)
    if not chart:
        return ""
    return _section(
        "fix",
        "Fix search trace",
        f'<div class="fig">{chart}</div>'
        + weight_changes_table(fix.get("weight_changes"))
        + ranking_table(fix.get("ranking")),
        "<p class='note'>Each dot is one configuration tried by <code>fix</code>: filled dots met "
        "the target, hollow ones did not; the line joins those that met it.</p>",
    )


def render_html(statistics: Statistics, *, title: str | None = None) -> str:
    """The report as one self-contained HTML document (a string)."""
    layers = statistics.layers
    ordered = graph_order(layers)
    tips = [tooltip(r) for r in ordered]
    prov = statistics.provenance
    heading = title or "Quantization debug report"
    mode = "whole model" if statistics.verify_mode == "whole_model" else "per layer"
    sub = [f"verify mode: {mode}", f"{len(layers)} verified layer(s)"]
    if prov.get("created"):
        sub.append(f"run {prov['created']}")
    meta = header_meta(prov)
    meta_html = f'<p class="meta">{esc(meta)}</p>' if meta else ""

    nav: list[tuple[str, str]] = [("summary", "Summary"), ("charts", "Charts")]
    sections = [_section("summary", "Summary", cards(statistics) + HOW_TO_READ)]
    culprits = culprits_section(statistics, ordered, tips)
    if culprits:  # the report opens with what breaks the model, before TFLite's per-layer view
        nav.insert(0, ("culprits", "Culprits"))
        sections.insert(0, _section("culprits", CULPRITS_TITLE, culprits))

    if layers:
        ratios = [r.rmse_over_scale for r in ordered]
        levels = [severity(v) for v in ratios]
        colors = [SEVERITY[lv][1] for lv in levels]
        classes = [f"sev-{lv}{' tiny' if is_tiny(r) else ''}" for lv, r in zip(levels, ordered, strict=True)]
        rmse_chart = bar_chart(
            ordered,
            ratios,
            label="rmse/scale per layer",
            ylabel="rmse / scale",
            colors=colors,
            tooltips=tips,
            refs=[IDEAL_LINE, SUSPECT_LINE],
            log=True if max((v for v in ratios if math.isfinite(v)), default=0) > 20 else False,
            classes=classes,
        )
        range_chart = bar_chart(
            ordered,
            [r.range for r in ordered],
            label="quantization range per layer",
            ylabel="range = (qmax − qmin) × scale",
            colors=colors,
            tooltips=tips,
            classes=classes,
        )
        charts = (
            "<h3>Error per layer: rmse / scale</h3>" + legend() + f'<div class="fig">{rmse_chart}</div>'
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
                    f'<div class="fig">{propagation_chart(ordered, tips)}</div>',
                    "<p class='note'>Whole-model mode runs the fully quantized model, so each layer's error includes "
                    "what earlier layers passed on. A step up marks the layer that adds the most.</p>",
                )
            )
        nav.append(("worst-layers", "Worst layers"))
        sections.append(_section("worst-layers", "Worst layers", worst_table(layers)))
    else:
        sections.append(
            _section("charts", "Charts", '<p class="muted">No layer was verified, so there is nothing to chart.</p>')
        )

    histograms = _histograms_section(statistics)
    if histograms:
        nav.append(("histograms", "Histograms"))
        sections.append(histograms)

    if statistics.model_statistics:
        nav.append(("model-metrics", "Model metrics"))
        items = {
            k: fmt(float(v), 6) if isinstance(v, (int, float)) else v for k, v in statistics.model_statistics.items()
        }
        sections.append(_section("model-metrics", "Model metrics", kv_table(items, "kv wide")))

    fix = _fix_section(statistics)
    if fix:
        nav.append(("fix", "Fix search"))
        sections.append(fix)

    if layers:
        nav.append(("all-layers", "All layers"))
        sections.append(_section("all-layers", "All layers", full_table(statistics)))
    nav.append(("coverage", "Coverage"))
    sections.append(_section("coverage", "Coverage", coverage_table(statistics.coverage)))
    nav.append(("provenance", "Provenance"))
    sections.append(_section("provenance", "Provenance", provenance_table(prov)))

    nav_html = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    csp = content_security_policy()
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="quantdebug {esc(prov.get("quantdebug", ""))}">'
        f"<title>{esc(heading)}</title><style>{style()}</style></head><body>"
        f'<header><div class="wrap"><h1>{esc(heading)}</h1><p class="sub">{esc(" · ".join(sub))}</p>{meta_html}'
        f"<nav>{nav_html}</nav></div></header>"
        f'<main class="wrap">{"".join(sections)}</main>'
        f'<footer class="wrap">Generated by quantdebug at {esc(generated)} from saved statistics; '
        "this file is self-contained and works offline.</footer>"
        f"<script>{script()}</script></body></html>\n"
    )


def save_html(statistics: Statistics, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write `render_html` to ``path`` atomically; returns the path."""
    out = Path(path)
    write_text(out, render_html(statistics, title=title))
    return out
