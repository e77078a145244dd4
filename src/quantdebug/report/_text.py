"""The text the command line prints, as plain functions over saved statistics: the summary of a debug
run (culprits, TensorFlow Lite's worst layers, a suggested denylist) and the table of what changed
between two runs. Every line fits an 80-column terminal, and a node name is never cut: it is what
a reader pastes into ``--denylist-nodes``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from quantdebug.fix import REASONS, number
from quantdebug.pipeline.results import CSV_NAME, JSON_NAME, LayerRow, Statistics, compare_statistics
from quantdebug.report._format import CULPRITS_TITLE
from quantdebug.report._rows import has_mean_elements
from quantdebug.thresholds import SUSPECT_RMSE_OVER_SCALE

TEXT_WIDTH = 79  # everything printed fits an 80-column terminal


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, keeping both ends of long names."""
    if len(text) <= width:
        return text
    if width <= 5:
        return text[:width]
    head = (width - 2) // 2
    tail = width - 2 - head
    return text[:head] + ".." + text[-tail:]


def _named_row(name: str, width: int, before: str, after: str) -> list[str]:
    """``before + name + after`` with the name padded to ``width``; a longer name goes, whole, on lines of its
    own (wrapped at TEXT_WIDTH) above the row: a name cut in the middle cannot be read or pasted into a denylist."""
    if len(name) <= width:
        return [f"{before}{name:<{width}} {after}".rstrip()]
    piece = TEXT_WIDTH - 2
    pieces = [f"  {name[i : i + piece]}" for i in range(0, len(name), piece)]
    return [*pieces, f"{before}{'':<{width}} {after}".rstrip()]


def _num(value: float, spec: str) -> str:
    return "nan" if math.isnan(value) else format(value, spec)


def layer_table(rows: list[LayerRow]) -> list[str]:
    lines = [f"  {'op type':<17} {'node':<25} {'rmse/scale':>10} {'mean sq err':>11} {'range':>9}"]
    for r in rows:
        mse = r.metrics.get("mean_squared_error", math.nan)
        numbers = f"{_num(r.rmse_over_scale, '10.4g')} {_num(mse, '11.3e')} {_num(r.range, '9.4g')}"
        op = _fit(r.op_name, 17)
        lines += _named_row(r.node_name, 25, f"  {op:<17} ", numbers)
    return lines


def _wrap_names(prefix: str, names: list[str]) -> list[str]:
    """``prefix`` followed by comma-joined names, wrapped at TEXT_WIDTH."""
    lines: list[str] = []
    current = prefix
    for i, name in enumerate(names):
        piece = name + ("," if i < len(names) - 1 else "")
        if len(current) + len(piece) > TEXT_WIDTH and current.strip() != prefix.strip():
            lines.append(current)
            current = " " * len(prefix)
        current += piece
    lines.append(current)
    return lines


def culprit_lines(culprits: dict[str, Any], top: int) -> list[str]:
    """Each layer's impact, SQNR quantized alone and left alone in float, reason, and the change to try."""
    rows = list(culprits.get("rows", []))

    def db(value: Any) -> str:
        return _num(number(value), ".1f")

    lines = [
        f"{CULPRITS_TITLE}, on {culprits.get('samples', '?')} samples",
        f"  all int8: output SQNR {db(culprits.get('all_quantized_sqnr_db'))} dB; impact = a layer's share of "
        "that noise",
        f"  {'#':>2} {'node':<22} {'op':<17} {'impact':>6} {'alone dB':>8} {'float dB':>8}",
        "       the reason, and the change to try",
    ]
    for i, row in enumerate(rows if top == 0 else rows[:top], 1):
        reason = str(row.get("reason", ""))
        after = (
            f"{_fit(str(row['op_name']), 17):<17} {_num(number(row['impact']), '6.3f')} "
            f"{db(row['quantized_alone_sqnr_db']):>8} {db(row['float_alone_sqnr_db']):>8}"
        )
        lines += _named_row(str(row["node_name"]), 22, f"  {i:>2} ", after)
        lines += _code_lines(
            str(row["suggested_change"]), f"       {REASONS.get(reason, reason)}; try: ", "           "
        )
    return lines


def _code_lines(code: str, first: str, rest: str) -> list[str]:
    """``code`` after ``first``, broken after commas and open brackets outside string literals so that
    each line fits TEXT_WIDTH and the whole still pastes as Python (a name longer than a line stays whole)."""
    if len(first) + len(code) <= TEXT_WIDTH:
        return [first + code]
    pieces, start, quote = [], 0, ""
    for i, ch in enumerate(code):
        if quote:
            quote = "" if ch == quote and code[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in ",([":
            pieces.append(code[start : i + 1])
            start = i + 1
    pieces.append(code[start:])
    lines, current = [], first
    for piece in pieces:
        if current.strip() and len(current) + len(piece.rstrip()) > TEXT_WIDTH and current not in (first, rest):
            lines.append(current.rstrip())
            current = rest + piece.lstrip()
        else:
            current += piece
    lines.append(current.rstrip())
    return lines


def culprit_denylist(culprits: dict[str, Any], layers: int) -> list[str]:
    names = [str(n) for n in culprits.get("denylist", [])]
    if not names:
        return ["Suggested denylist: none (no layer holds a measurable share of the output noise)"]
    share = 100 * number(culprits.get("denylist_removes"))
    head = f"Suggested denylist: {len(names)} of {layers} layers, removing {share:.1f}% of the output noise"
    return [head, *_wrap_names("  --denylist-nodes ", names)]


def suggestion_lines(culprits: dict[str, Any], command: list[str] | None = None) -> list[str]:
    """The culprits' own changes as one config: how many layers, the noise they take, the call and the
    shell command (``command``: its pieces, printed one a line with backslash continuations)."""
    suggestion = culprits.get("suggestion")
    if not isinstance(suggestion, dict) or not suggestion.get("nodes"):
        return []
    nodes, share = list(suggestion["nodes"]), 100 * number(suggestion.get("removes"))
    floats = int(number(suggestion.get("float_layers")) or 0)
    lines = [
        f"Suggested config: the culprits' own changes on {len(nodes)} layer(s), {floats} in float,",
        f"  removing {share:.1f}% of the output noise (on the switchable graph):",
        *_code_lines(str(suggestion.get("code", "")), "  ", "      "),
    ]
    if command:
        pieces = [("  " if i == 0 else "      ") + piece for i, piece in enumerate(command)]
        lines += [p + " \\" for p in pieces[:-1]] + pieces[-1:]
    return lines


def debug_summary(
    statistics: Statistics,
    folder: Path,
    *,
    top: int = 10,
    threshold: float = SUSPECT_RMSE_OVER_SCALE,
    samples: int | None = None,
    command: list[str] | None = None,
) -> str:
    """The terminal summary of a debug run: the culprits, their suggested denylist and config (``command``:
    the ``quantdebug quantize`` line that applies the config), worst layers by rmse/scale and by MSE."""
    rows = statistics.layers
    counts = dict.fromkeys(("verified", "unverified", "float", "removed"), 0)
    for entry in statistics.coverage:
        status = entry.get("status", "") or "other"
        counts[status] = counts.get(status, 0) + 1
    mode = statistics.verify_mode.replace("_", "-")
    head = f"{len(rows)} layers verified ({mode})" + (f" on {samples} samples" if samples else "")
    lines = [head]
    if statistics.coverage:
        lines.append("nodes: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
        if counts["verified"] != len(rows):  # the two counts differ: say what each counts
            lines.append("  (a layer: one quantized output, one CSV row; its nodes count fused ones too)")
    varying = [r for r in rows if has_mean_elements(r)]
    if varying:  # TFLite's CSV keeps the mean; say why it is not a whole number
        lines.append(f"note: num_elements of {len(varying)} layers is a mean over samples of different sizes")
    lines.append(f"wrote {CSV_NAME} and {JSON_NAME} to {folder}")
    limit = len(rows) if top == 0 else top
    culprits = statistics.extras.get("culprits")
    if culprits:
        lines += ["", *culprit_lines(culprits, top), "", *culprit_denylist(culprits, len(rows))]
        suggested = suggestion_lines(culprits, command)
        lines += ["", *suggested] if suggested else []
        lines += ["", "TensorFlow Lite's view: each layer's own error in quantization steps"]

    def key(value: float) -> float:
        return -math.inf if math.isnan(value) else value

    by_ratio = sorted(rows, key=lambda r: key(r.rmse_over_scale), reverse=True)[:limit]
    by_mse = sorted(rows, key=lambda r: key(r.metrics.get("mean_squared_error", math.nan)), reverse=True)[:limit]
    lines += ["", "Worst layers by rmse/scale", *layer_table(by_ratio)]
    lines += ["", "Worst layers by mean squared error", *layer_table(by_mse)]
    suspects = statistics.suspects(threshold)
    lines.append("")
    if culprits:  # the denylist came from the culprits; the tutorial's rule is only counted
        lines.append(f"(the tutorial's rule, rmse/scale > {threshold:g}, picks {len(suspects)} of {len(rows)} layers)")
    elif suspects:
        lines.append(f"Suggested denylist: {len(suspects)} of {len(rows)} layers have rmse/scale > {threshold:g}")
        lines += _wrap_names("  --denylist-nodes ", [r.node_name for r in suspects])
    else:
        lines.append(f"Suggested denylist: none (no layer has rmse/scale > {threshold:g})")
    return "\n".join(lines)


def _describe_run(label: str, path: str, statistics: Statistics) -> str:
    created = str(statistics.provenance.get("created", ""))[:16].replace("T", " ")
    parts = [f"{len(statistics.layers)} layers", statistics.verify_mode.replace("_", "-")]
    if created:
        parts.append(created)
    suffix = f" ({', '.join(parts)})"
    prefix = f"{label}: "
    return prefix + _fit(path, max(TEXT_WIDTH - len(prefix) - len(suffix), 12)) + suffix


def compare_table(a: Statistics, b: Statistics, *, top: int = 20) -> list[str]:
    """Rows of the compare table, largest change of rmse/scale first; layers of one run only are flagged."""
    records = compare_statistics(a, b)

    def change(rec: dict[str, Any]) -> float:
        va, vb = rec["rmse/scale A"], rec["rmse/scale B"]
        if rec["status"] == "only in A":
            return -va if not math.isnan(va) else 0.0
        if rec["status"] == "only in B":
            return vb if not math.isnan(vb) else 0.0
        delta = vb - va
        return 0.0 if math.isnan(delta) else float(delta)

    ordered = sorted(records, key=lambda rec: abs(change(rec)), reverse=True)
    shown = ordered if top == 0 else ordered[:top]
    lines = [f"  {'node':<28} {'rmse/scale A':>12} {'rmse/scale B':>12} {'change':>9}  note"]
    for rec in shown:
        status = rec["status"]
        if status == "both":
            note = ""
            pa, pb = rec["precision A"], rec["precision B"]
            if pa != pb:
                note = _fit(f"{pa}>{pb}", 12)
            delta = _num(round(rec["rmse/scale B"] - rec["rmse/scale A"], 3) + 0.0, "+9.3f")
        else:
            note = status
            delta = "-"
        va = "-" if status == "only in B" else _num(rec["rmse/scale A"], "12.4g")
        vb = "-" if status == "only in A" else _num(rec["rmse/scale B"], "12.4g")
        cells = f"{va:>12} {vb:>12} {delta:>9}  {note}".rstrip()
        lines += _named_row(rec["node_name"], 28, "  ", cells)
    if len(shown) < len(ordered):
        lines.append(f"  ... {len(ordered) - len(shown)} more rows (--top 0 shows all)")
    both = [rec for rec in records if rec["status"] == "both"]
    better = sum(1 for rec in both if rec["rmse/scale B"] < rec["rmse/scale A"] - 1e-3)
    worse = sum(1 for rec in both if rec["rmse/scale B"] > rec["rmse/scale A"] + 1e-3)
    only_a = sum(1 for rec in records if rec["status"] == "only in A")
    only_b = sum(1 for rec in records if rec["status"] == "only in B")
    lines.append("")
    lines.append(
        f"{len(both)} layers in both runs: {better} better in B, {worse} worse, "
        f"{len(both) - better - worse} within 0.001"
    )
    lines.append(f"{only_a} only in A, {only_b} only in B")
    return lines


def compare_summary(a: Statistics, b: Statistics, path_a: str, path_b: str, *, top: int = 20) -> str:
    """What ``quantdebug compare`` prints: both runs, notes when they differ in model or data, then the table."""
    lines = [_describe_run("A", path_a, a), _describe_run("B", path_b, b)]
    fa, fb = a.provenance.get("model_fingerprint"), b.provenance.get("model_fingerprint")
    same_kind = a.provenance.get("model_fingerprint_version", 1) == b.provenance.get("model_fingerprint_version", 1)
    if fa and fb and fa != fb and same_kind:  # fingerprints of two releases' kinds differ for one model
        lines.append("note: A and B come from different models; only tensors with the same name are compared")
    da, db = a.provenance.get("dataset_fingerprint"), b.provenance.get("dataset_fingerprint")
    if da and db and da != db:
        lines.append("note: A and B were run on different debug data")
    lines.append("")
    lines += compare_table(a, b, top=top)
    return "\n".join(lines)
