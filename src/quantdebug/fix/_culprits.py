"""The culprits: each quantized layer's share of the output quantization noise, why it has it, and what to change.

Measured on the one switchable graph that ``fix`` ranks with (``_switch.py``), layer by layer: for
L layers, 2L + 1 runs of it over a few samples (every layer quantized alone, every layer alone left
in float, everything quantized), plus a few runs for the suggested denylist. The graph runs with
onnxruntime's optimizations off, so that each setting computes exactly what the QDQ model with the
same tensors quantized computes when onnxruntime runs it unoptimized (fake quantization in float).

A layer's ``reason`` is one of ``REASONS``, decided by a test on its own numbers, first match wins:

``sentinel``        its calibrated range reaches a fill value (|x| >= ``SENTINEL``, e.g. a -3.4e38 mask);
``outliers``        its MinMax range is ``OUTLIER_RATIO`` times the range holding 99.99% of its values;
``channel_spread``  its weight's per-channel ranges are ``SPREAD`` times apart (per-tensor weights);
``float_consumer``  a float op reading it (Log, Exp, Div, Sqrt, Pow, Reciprocal, Softmax ...) loses
                    ``AMPLIFY_DB`` more SQNR than the layer's own output when fed the layer's
                    quantized values: the range is too wide for that op (the op is named);
``few_levels``      its own output SQNR under int8 is below ``FEW_LEVELS_DB`` (the values that
                    matter use a handful of the 256 levels);
``rounding``        none of these: plain rounding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.fix._evidence import LayerEvidence
from quantdebug.fix._ranking import noise_share
from quantdebug.fix._suggest import (
    ESCALATION,
    FREE_LEVERS,
    MIN_IMPACT,
    config_call,
    fewest,
    lever_switches,
    suggestion_config,
)
from quantdebug.fix._switch import SwitchRunner, build_switch_model, output_sqnr
from quantdebug.fix.levers import OUTLIER_RATIO, SENTINEL, SPREAD, outlier_tensors, sentinel_clamps, spread_nodes
from quantdebug.pipeline.calibrate import Calibration
from quantdebug.pipeline.plan import Plan

SENTINEL_REASON = "sentinel"
OUTLIERS = "outliers"
CHANNEL_SPREAD = "channel_spread"
FLOAT_CONSUMER = "float_consumer"
FEW_LEVELS = "few_levels"
ROUNDING = "rounding"
REASONS: dict[str, str] = {
    SENTINEL_REASON: "range set by a sentinel value",
    OUTLIERS: "range set by a few outliers (calibration histogram)",
    CHANNEL_SPREAD: "per-channel weight ranges far apart",
    FLOAT_CONSUMER: "range too wide for the float op that consumes it",
    FEW_LEVELS: "too few int8 levels for the values that matter",
    ROUNDING: "plain rounding",
}
AMPLIFY_DB = 20.0  # a consumer this many dB worse than its input: it amplifies relative error (x100 in power)
FEW_LEVELS_DB = 20.0  # int8 over a well-used range gives 35-45 dB; 20 dB is about ten levels' worth
CONSUMER_HOPS = 2  # quantized nodes a float consumer may sit behind
CULPRIT_SAMPLES = 4  # debug samples culprits() and DebugOptions(impact=True) measure on
COLUMNS = (
    "node_name",
    "op_name",
    "tensor_name",
    "impact",
    "quantized_alone_sqnr_db",
    "float_alone_sqnr_db",
    "per_layer_rmse/scale",
    "whole_model_rmse/scale",
    "tensor_sqnr_db",
    "reason",
    "detail",
    "lever",
    "suggested_change",
)
__all__ = ["COLUMNS", "CULPRIT_SAMPLES", "REASONS", "impact_share", "measure_culprits", "number", "stored_culprits"]


def impact_share(all_db: float, removed_db: float, alone_db: float) -> float:
    """``noise_share``, and where the fully quantized output is not finite (SQNR -inf, e.g. a Log of a
    zero that int8 made): 1 for a layer that alone makes it so, or whose removal makes it finite."""
    if all_db == -math.inf:
        return 1.0 if alone_db == -math.inf or removed_db > -math.inf else 0.0
    return noise_share(all_db, removed_db, alone_db)


def _code(name: str) -> str:
    return json.dumps(name)  # a Python string literal in double quotes, with any quote in the name escaped


class _Probe:
    """Runs the switchable graph with chosen switches and extra tensors fetched, over the fixed feeds."""

    def __init__(self, runner: SwitchRunner) -> None:
        self.runner = runner
        self.n_act, self.n_w = runner.n_act, runner.n_w
        self.runs = 1  # the runner's reference run

    def run(self, act: np.ndarray, weights: np.ndarray, extra: Sequence[str] = ()) -> tuple[float, dict[str, Any]]:
        runner = self.runner
        names = list(dict.fromkeys([*runner.outputs, *extra]))
        per: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for feed in runner.feeds:
            full = {**feed, "__qd/switch/activations": act > 0.5, "__qd/switch/weights": weights > 0.5}
            for name, value in zip(names, runner.session.run(names, full)):
                per[name].append(np.asarray(value).reshape(-1))
        self.runs += 1
        flat = {n: np.concatenate(v) for n, v in per.items()}
        return output_sqnr(runner.reference, [flat[n] for n in runner.outputs]), flat

    def setting(self, act_on: Sequence[int], w_on: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        act, weights = np.zeros(self.n_act, np.float32), np.zeros(self.n_w, np.float32)
        act[list(act_on)] = 1.0
        weights[list(w_on)] = 1.0
        return act, weights


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """The switchable model with ``names`` as extra graph outputs (types left to onnxruntime)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


def _float_consumers(float_model: onnx.ModelProto, plan: Plan, tensor: str) -> list[onnx.NodeProto]:
    """The float nodes that read ``tensor``, directly or through up to ``CONSUMER_HOPS`` quantized nodes
    (a Log behind a quantized Add reads the MatMul before it: when only the MatMul is quantized, the
    Add runs in float and passes the MatMul's rounding on)."""
    quantized = {n for u in plan.units for n in u.twin}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in float_model.graph.node:
        for name in dict.fromkeys(node.input):
            readers.setdefault(name, []).append(node)
    found: dict[str, onnx.NodeProto] = {}
    frontier, seen = [tensor], {tensor}
    for _ in range(CONSUMER_HOPS + 1):
        following = []
        for name in frontier:
            for node in readers.get(name, []):
                if node.name not in quantized:
                    if node.output and node.output[0]:
                        found.setdefault(node.name, node)
                    continue
                following += [o for o in node.output if o and o not in seen]
                seen.update(following)
        frontier = following
    return list(found.values())


def measure_culprits(
    float_model: onnx.ModelProto,
    plan: Plan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    calibration: Calibration | None,
    evidence: Mapping[str, LayerEvidence],
    weight_records: Sequence[Mapping[str, Any]],
    precisions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every switchable layer's impact, reason and suggested change, ranked; and the suggested denylist.

    ``precisions``: every node's precision (``debugger.precisions()``), for the denylist's readers.
    Returns ``{"rows": [...], "denylist": [...], "denylist_removes": share, "all_quantized_sqnr_db": dB,
    "samples": n, "runs": n, "seconds": s}`` (plain data: it is stored in statistics files).
    """
    start = time.perf_counter()
    model, switches = build_switch_model(float_model, plan)
    ops = {u.float_tensor: u.op_type for u in plan.units}
    consumers = {t: _float_consumers(float_model, plan, t) for t in switches.tensors}
    raw = [f"__qd/sw/{k}/raw" for k in range(len(switches.tensors))]
    extra = [*raw, *switches.tensors, *(c.output[0] for cs in consumers.values() for c in cs)]
    runner = SwitchRunner(float_model, None, feeds, built=(_with_outputs(model, extra), switches), level="disabled")
    probe = _Probe(runner)
    every_act = range(len(switches.nodes))
    every_w = range(len(switches.weights))
    consumer_outs = [c.output[0] for cs in consumers.values() for c in cs]
    _, reference = probe.run(*probe.setting([], []), consumer_outs)
    all_db, _ = probe.run(*probe.setting(every_act, every_w))
    spread = set(spread_nodes(weight_records))
    tensors = list(switches.tensors)
    clamps = {c[0]: c for c in sentinel_clamps(calibration, tensors)} if calibration is not None else {}
    wide = set(outlier_tensors(calibration, tensors)) if calibration is not None else set()
    rows: list[dict[str, Any]] = []
    for k, (node, tensor) in enumerate(zip(switches.nodes, switches.tensors)):
        js = switches.weight_switches_of({node})
        fetch = [raw[k], tensor, *(c.output[0] for c in consumers[tensor])]
        alone_db, got = probe.run(*probe.setting([k], js), fetch)
        removed_db, _ = probe.run(*probe.setting([a for a in every_act if a != k], [j for j in every_w if j not in js]))
        tensor_db = output_sqnr([got[raw[k]]], [got[tensor]])
        worst: tuple[float, str] = (math.inf, "")
        for c in consumers[tensor]:
            ref, mine = reference.get(c.output[0]), got.get(c.output[0])
            if ref is None or mine is None or not np.issubdtype(ref.dtype, np.floating):
                continue
            worst = min(worst, (output_sqnr([ref], [mine]), f"{c.op_type} {c.name!r}"))
        ev = evidence.get(node)
        row: dict[str, Any] = {
            "node_name": node,
            "op_name": ops.get(tensor, ""),
            "tensor_name": tensor,
            "impact": impact_share(all_db, removed_db, alone_db),
            "quantized_alone_sqnr_db": alone_db,
            "float_alone_sqnr_db": removed_db,
            "per_layer_rmse/scale": ev.per_layer if ev is not None else math.nan,
            "whole_model_rmse/scale": ev.whole_model if ev is not None else math.nan,
            "tensor_sqnr_db": tensor_db,
        }
        row.update(_reason(node, tensor, tensor_db, worst, clamps.get(tensor), tensor in wide, node in spread))
        rows.append(row)
    # ties (two layers that each alone make the output non-finite) go to the one that harms most alone
    order = sorted(
        range(len(rows)),
        key=lambda i: (-rows[i]["impact"], rows[i]["quantized_alone_sqnr_db"], -rows[i]["float_alone_sqnr_db"], i),
    )
    rows = [rows[i] for i in order]
    quantized = (
        {n for n, p in precisions.items() if p != "float"} if precisions else {n for u in plan.units for n in u.twin}
    )
    readers = [{n.name for n in float_model.graph.node if t in n.input and n.name in quantized} for t in tensors]
    ranked = _Ranked(probe, switches, order, rows, all_db, readers)
    denylist, removes = _denylist(ranked)
    suggestion = _suggestion(ranked, clamps)
    return {
        "rows": rows,
        "denylist": denylist,
        "denylist_removes": removes,
        "suggestion": suggestion,
        "all_quantized_sqnr_db": all_db,
        "samples": len(feeds),
        "runs": probe.runs,
        "seconds": time.perf_counter() - start,
    }


def _reason(
    node: str,
    tensor: str,
    tensor_db: float,
    consumer: tuple[float, str],
    clamp: tuple[str, float, float] | None,
    outliers: bool,
    spread: bool,
) -> dict[str, str]:
    """The first of REASONS that the layer's numbers pass, with the lever and the call that applies it."""
    float_change = f"DebugOptions(denylisted_nodes=[{_code(node)}])"
    int16_change = f'QuantConfig(node_precision=[({_code(node)}, "int16")])'
    if clamp is not None:
        _, lo, hi = clamp
        return {
            "reason": SENTINEL_REASON,
            "detail": f"calibrated range reaches |x| >= {SENTINEL:g}; the real values lie in [{lo:.4g}, {hi:.4g}]",
            "lever": "clamp",
            "suggested_change": f"QuantConfig(tensor_clamps=[({_code(tensor)}, {lo:.6g}, {hi:.6g})])",
        }
    if outliers:
        return {
            "reason": OUTLIERS,
            "detail": f"MinMax range is over {OUTLIER_RATIO:g}x the range holding 99.99% of the values",
            "lever": "calibration",
            "suggested_change": f'QuantConfig(calibration_overrides=[({_code(tensor)}, "percentile")])',
        }
    if spread:
        return {
            "reason": CHANNEL_SPREAD,
            "detail": f"weight channel ranges over {SPREAD:g}x apart share one per-tensor scale",
            "lever": "per_channel",
            "suggested_change": f"QuantConfig(per_channel_nodes=[{_code(node)}])",
        }
    consumer_db, consumer_name = consumer
    if consumer_name and tensor_db - consumer_db >= AMPLIFY_DB:
        return {
            "reason": FLOAT_CONSUMER,
            "detail": (
                f"the float {consumer_name} reading it keeps {_db(consumer_db)} dB of SQNR where the "
                f"layer's own output keeps {_db(tensor_db)} dB"
            ),
            "lever": "float",
            "suggested_change": float_change,
        }
    if tensor_db < FEW_LEVELS_DB:
        return {
            "reason": FEW_LEVELS,
            "detail": f"its int8 output keeps {_db(tensor_db)} dB of SQNR",
            "lever": "int16",
            "suggested_change": int16_change,
        }
    return {
        "reason": ROUNDING,
        "detail": f"its int8 output keeps {_db(tensor_db)} dB of SQNR",
        "lever": "int16",
        "suggested_change": int16_change,
    }


@dataclasses.dataclass(frozen=True)
class _Ranked:
    """What the denylist and config searches share: the graph's runner, the ranking and the readers."""

    probe: _Probe
    switches: Any
    order: Sequence[int]
    rows: Sequence[Mapping[str, Any]]
    all_db: float
    readers: Sequence[set[str]]

    def parts(self) -> tuple[_Probe, Any, Sequence[int], Sequence[Mapping[str, Any]], float, Sequence[set[str]]]:
        # not dataclasses.astuple: it deep-copies, onnxruntime session included
        return self.probe, self.switches, self.order, self.rows, self.all_db, self.readers


def _db(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else str(value)


def _denylist(ranked: _Ranked) -> tuple[list[str], float]:
    """The fewest top culprits whose denylisting takes ``MOST_NOISE`` of the output noise (galloping, then
    bisection: about 2 log2 L runs), or the best prefix tried when none does.

    A denylist is measured as onnxruntime's quantizer applies it: a denylisted node's weights stay
    float, but its output stays quantized while a quantized node reads it (``readers[k]``: the
    quantized nodes reading switch k's tensor), so a culprit feeding a quantized Softmax is only
    out of int8 once the Softmax is denylisted too. So each culprit is followed, in the ranked list
    whose prefixes are tried, by the quantized nodes that read it.
    """
    probe, switches, order, rows, all_db, readers = ranked.parts()
    index = {n: k for k, n in enumerate(switches.nodes)}
    top: list[int] = []
    for k, row in zip(order, rows):
        if row["impact"] >= MIN_IMPACT:
            top += [j for j in [k, *sorted(index[r] for r in readers[k] if r in index)] if j not in top]
    if not top:
        return [], 0.0
    every_w = range(len(switches.weights))

    def removes(count: int) -> float:
        denied = {switches.nodes[k] for k in top[:count]}
        off_w = set(switches.weight_switches_of(denied))
        act = [a for a in range(len(switches.nodes)) if switches.nodes[a] not in denied or not readers[a] <= denied]
        db, _ = probe.run(*probe.setting(act, [j for j in every_w if j not in off_w]))
        return impact_share(all_db, db, math.inf)  # alone: nothing left quantized

    count, share = fewest(len(top), removes)
    return [switches.nodes[k] for k in top[:count]], share


def _suggestion(ranked: _Ranked, clamps: Mapping[str, tuple[str, float, float]]) -> dict[str, Any]:
    """The fewest top culprits whose own levers (``_suggest``) take ``MOST_NOISE`` of the output noise, as
    one config: ``{"nodes", "levers", "prefix", "removes", "float_layers", "config" (QuantConfig keywords),
    "code"}``; every other culprit above ``MIN_IMPACT`` whose own lever is free (``FREE_LEVERS``) gets it
    too (on the demo model per-channel weights on the 25 such convs recover 97.4%, the prefix's 2 alone
    89.7%: under heavy damage the noise is far from additive, and these levers cost no float layer).

    A culprit's lever is checked on its own the first time a prefix holds it: where it alone removes
    less than half of what leaving the layer in float removes (a depthwise conv whose channels'
    outputs, not only weights, are 1000x apart), the next lever up is tried (``ESCALATION``), and where
    none is enough the one that removes most (1 to 3 runs per culprit the search reaches).
    """
    probe, switches, order, rows, all_db, readers = ranked.parts()
    top = [k for k, row in zip(order, rows) if row["impact"] >= MIN_IMPACT]
    row_of = {k: row for k, row in zip(order, rows)}
    levers = [""] * len(switches.nodes)

    def share_of(setting: tuple[list[int], list[int]]) -> float:
        db, _ = probe.run(*probe.setting(*setting))
        return impact_share(all_db, db, math.inf)

    def settle(k: int) -> None:
        row = row_of[k]
        in_float = impact_share(all_db, row["float_alone_sqnr_db"], math.inf)
        tried: list[tuple[float, str]] = []
        lever: str | None = str(row["lever"])
        while lever is not None:
            levers[k] = lever
            tried.append((share_of(lever_switches(switches, [k], levers, readers)), lever))
            if tried[-1][0] >= 0.5 * in_float:
                return
            lever = ESCALATION.get(lever)
        levers[k] = max(tried, key=lambda t: t[0])[1]  # none is enough: the best (the first, cheapest, on ties)

    def removes(count: int) -> float:
        for k in top[:count]:
            if not levers[k]:
                settle(k)
        return share_of(lever_switches(switches, top[:count], levers, readers))

    if not top:
        return {
            "nodes": [],
            "levers": [],
            "prefix": 0,
            "removes": 0.0,
            "float_layers": 0,
            "config": {},
            "code": "QuantConfig()",
        }
    count, _ = fewest(len(top), removes)
    # the free levers (int8 all the same: no float layer, no wider type) go to every culprit that names one
    picked = [*top[:count], *(k for k in top[count:] if row_of[k]["lever"] in FREE_LEVERS)]
    for k in picked[count:]:
        levers[k] = str(row_of[k]["lever"])
    chosen = [{**row_of[k], "lever": levers[k]} for k in picked]
    config = suggestion_config(chosen, clamps)
    return {
        "nodes": [str(row["node_name"]) for row in chosen],
        "levers": [row["lever"] for row in chosen],
        "prefix": count,
        "removes": share_of(lever_switches(switches, picked, levers, readers)),
        "float_layers": sum(row["lever"] == "float" for row in chosen),
        "config": config,
        "code": config_call(config),
    }


def _plain(value: Any) -> Any:
    """A JSON-safe number: NaN as None, infinities as the strings "inf" / "-inf" (an SQNR of -inf is
    news: the output was not finite), everything else as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def stored_culprits(measured: Mapping[str, Any]) -> dict[str, Any]:
    """``measure_culprits``' result as strict JSON data, for ``Statistics.extras["culprits"]``."""
    out = {k: _plain(v) for k, v in measured.items() if k != "rows"}
    out["rows"] = [{k: _plain(v) for k, v in row.items()} for row in measured["rows"]]
    return out


def number(value: Any) -> float:
    """A stored number back as a float; None, and anything a hand-edited file put there, is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
