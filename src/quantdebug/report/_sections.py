"""The report's summary sections: the cards, the severity legend, how to read rmse/scale, the header's
provenance line and the culprits section."""

from __future__ import annotations

import math
import statistics as pystats
from collections.abc import Mapping, Sequence
from typing import Any

from quantdebug.fix import number
from quantdebug.pipeline.results import LayerRow, Statistics
from quantdebug.report._charts import IDEAL_LINE, bar_chart, impact_color
from quantdebug.report._format import esc, fmt, rank_worst, short
from quantdebug.report._rows import has_mean_elements, is_exact_copy
from quantdebug.report._tables import WORST_ROWS, culprits_table, denylist_line
from quantdebug.thresholds import FEW_ELEMENTS, IDEAL_RMSE_OVER_SCALE, SEVERITY, SUSPECT_RMSE_OVER_SCALE, severity


def cards(statistics: Statistics) -> str:
    layers = statistics.layers
    copies = [r for r in layers if is_exact_copy(r)]
    ratios = [r.rmse_over_scale for r in layers if math.isfinite(r.rmse_over_scale) and not is_exact_copy(r)]
    suspects = [r for r in layers if r.rmse_over_scale > SUSPECT_RMSE_OVER_SCALE]
    worst = rank_worst(layers)[0] if layers else None
    cards = [("verified layers", str(len(layers)), "")]
    cards.append(
        (f"suspects (rmse/scale > {SUSPECT_RMSE_OVER_SCALE:g})", str(len(suspects)), "bad" if suspects else "good")
    )
    if worst is not None and math.isfinite(worst.rmse_over_scale):
        cards.append(
            (
                f"worst: {short(worst.node_name or worst.tensor_name, 40)}",
                fmt(worst.rmse_over_scale, 3),
                f"sev-{severity(worst.rmse_over_scale)}-text",
            )
        )
    if ratios:
        label = f"median rmse/scale ({len(copies)} exact-copy layers left out)" if copies else "median rmse/scale"
        cards.append((label, fmt(pystats.median(ratios), 3), ""))
    if statistics.coverage:
        verified = sum(1 for c in statistics.coverage if c.get("status") == "verified")
        cards.append(("nodes verified", f"{verified} / {len(statistics.coverage)}", ""))
    fix = statistics.extras.get("fix")
    if isinstance(fix, Mapping) and isinstance(fix.get("fixed_quality"), (int, float)):
        cards.append(("quality after fix", fmt(float(fix["fixed_quality"]), 4), "good"))
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


def legend() -> str:
    items = "".join(
        f'<span class="lg"><span class="sw sw-{k}"></span>{esc(label)}</span>'
        for k, (label, _) in SEVERITY.items()
        if k != "unknown"
    )
    return (
        f'<div class="legend">{items}'
        '<span class="lg"><span class="ln ln-ideal"></span>'
        f"1/√12 ≈ {IDEAL_RMSE_OVER_SCALE:.3f} ideal rounding noise</span>"
        f'<span class="lg"><span class="ln ln-suspect"></span>{SUSPECT_RMSE_OVER_SCALE:g} suspect threshold</span>'
        '<span class="lg"><span class="sw sw-faded"></span>'
        f"faded: fewer than {FEW_ELEMENTS} elements (noisy)</span></div>"
    )


HOW_TO_READ = (
    "<p class='lead'><b>How to read rmse/scale.</b> It is the root-mean-square error between a layer's quantized "
    "output and its float twin, measured in quantization steps (the layer's scale). Ideal uniform rounding leaves "
    f"1/√12 ≈ {IDEAL_RMSE_OVER_SCALE:.3f} of a step; values near it mean the layer quantizes as well as it can. "
    f"Values much larger (above {SUSPECT_RMSE_OVER_SCALE}, the tutorial's suspect threshold) mean the layer's range "
    "or precision is the problem: outliers stretch the range, values clip, or 8 bits are too few; try a different "
    "calibration, a wider type (int16) or leaving the layer in float. A large range with a small rmse/scale is "
    "usually fine. On tiny tensors (fewer than "
    f"{FEW_ELEMENTS} elements, flagged <span class='flag'>few elements</span>) the rule of thumb is noisy.</p>"
)


def header_meta(prov: Mapping[str, Any]) -> str:
    """One line of provenance for the header: versions, CPU, fingerprints and the main config choices."""
    bits = [f"{k} {prov[k]}" for k in ("quantdebug", "onnxruntime", "onnx", "numpy", "python") if prov.get(k)]
    flags = prov.get("cpu_flags")
    if prov.get("machine"):
        shown = ", ".join(map(str, flags)) if isinstance(flags, list) and flags else "no flags recorded"
        bits.append(f"{prov['machine']} ({shown})")
    for key, label in (("model_fingerprint", "model"), ("dataset_fingerprint", "data")):
        if prov.get(key):
            bits.append(f"{label} {short(str(prov[key]), 13)}")
    cfg = prov.get("quant_config")
    if isinstance(cfg, Mapping):
        act, wt = cfg.get("activation_type"), cfg.get("weight_type")
        if act and wt:
            granularity = "per-channel" if cfg.get("per_channel") else "per-tensor"
            bits.append(f"{act} activations, {wt} weights, {cfg.get('calibration_method', '?')}, {granularity}")
    return " · ".join(bits)


def culprits_section(statistics: Statistics, ordered: Sequence[LayerRow], tips: Sequence[str]) -> str:
    """The culprits: ranked table with impact bars, reasons and the changes as code; rmse/scale coloured by impact."""
    culprits = statistics.extras.get("culprits")
    if not isinstance(culprits, Mapping) or not isinstance(culprits.get("rows"), Sequence):
        return ""
    rows = [r for r in culprits["rows"] if isinstance(r, Mapping)]
    chart = ""
    if ordered:
        chart = bar_chart(
            ordered,
            [r.rmse_over_scale for r in ordered],
            label="rmse/scale per layer, coloured by impact",
            ylabel="rmse / scale",
            colors=[impact_color(r.impact) for r in ordered],
            tooltips=[f"{t}\nimpact {fmt(r.impact, 3)}" for t, r in zip(tips, ordered)],
            refs=[IDEAL_LINE],
        )
    return (
        "<p class='note'>Impact: the larger of the share of the fully quantized model's output noise a layer makes "
        "when it alone is quantized and the share that leaving it alone in float removes, measured on "
        f"{esc(culprits.get('samples', '?'))} debug samples. The suggested change is the call that applies "
        "the lever <code>fix</code> would try.</p>"
        f'<div class="scroll">{culprits_table(rows, WORST_ROWS)}</div>{denylist_line(culprits)}'
        + _suggestion_line(culprits)
        + (f"<h3>Error per layer, coloured by impact</h3><div class='fig'>{chart}</div>" if chart else "")
    )


def _suggestion_line(culprits: Mapping[str, Any]) -> str:
    """The culprits' own changes as one copyable ``QuantConfig`` call (``fix._suggest``), when measured."""
    suggestion = culprits.get("suggestion")
    if not isinstance(suggestion, Mapping) or not suggestion.get("nodes"):
        return ""
    nodes = suggestion["nodes"]
    floats = suggestion.get("float_layers", "?")
    return (
        f"<p>Suggested config: each of the top {len(nodes)} culprits' own change "
        f"({esc(floats)} layer(s) in float), removing {esc(fmt(100 * number(suggestion.get('removes')), 3))}% "
        "of the output noise on the switchable graph: "
        f"<code class='change'>{esc(suggestion.get('code', ''))}</code></p>"
    )
