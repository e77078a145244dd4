"""The ranking: which quantized nodes harm the output most, and the evidence behind each rank.

Noise shares come from the switchable graph (``_switch``), run on the executor's workers; the
debugger's per-layer statistics (``_evidence``) order what the graph did not measure and break
ties. ``sensitivity_table`` is the same measurement, node by node, for the debugger.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from quantdebug.errors import QuantDebugError
from quantdebug.executors import Executor
from quantdebug.fix._evidence import LayerEvidence, layer_evidence
from quantdebug.fix._switch import SwitchRunner, build_switch_model
from quantdebug.pipeline.plan import Plan

Switched = tuple[tuple[int, ...], tuple[int, ...]]  # activation and weight switches left in float


class SwitchScores:
    """Output SQNR of the switchable graph with some activation and weight switches left in float.

    Picklable and cheap to ship: an executor sends it once per worker, and each worker builds one
    SwitchRunner (session and reference outputs) on its first item and reuses it for the rest.
    """

    def __init__(self, float_model: onnx.ModelProto, plan: Plan, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        model, self.switches = build_switch_model(float_model, plan)  # once: the ranking reads the switches too
        self.float_model = float_model.SerializeToString()
        self.switch_model = model.SerializeToString()
        self.feeds = [dict(f) for f in feeds]
        self._runner: SwitchRunner | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runner": None}  # sessions are built where the items are scored

    @property
    def runner(self) -> SwitchRunner:
        if self._runner is None:
            built = (onnx.load_model_from_string(self.switch_model), self.switches)
            self._runner = SwitchRunner(onnx.load_model_from_string(self.float_model), None, self.feeds, built=built)
        return self._runner

    def __call__(self, off: Switched) -> float:
        runner = self.runner
        act = np.ones(runner.n_act, np.float32)
        weights = np.ones(runner.n_w, np.float32)
        act[list(off[0])] = 0.0
        weights[list(off[1])] = 0.0
        return runner.score(act, weights)


def rank_suspects(
    float_model: onnx.ModelProto,
    plan: Plan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    executor: Executor,
    precisions: Mapping[str, str],
) -> tuple[list[str], list[dict[str, Any]]]:
    """Quantized nodes, most harmful first, and the evidence per node: the switchable graph and both verify modes.

    The switchable graph measures each node's share of the output noise two ways. Removal:
    how much of the fully quantized model's noise goes away when the node alone is left in
    float. Addition: how much noise the node makes when it alone is quantized. Removal misses
    harm that several nodes do redundantly (a text detector whose early layers each ruin the
    output: leaving any one in float changes nothing); addition misses harm that only appears
    in combination. Both are put in one unit, the fraction of the all-quantized output noise
    power, and a node ranks by the larger. Measured in groups first (about sqrt(L) groups of
    neighbouring nodes), then node by node: O(sqrt(L)) runs of the switchable graph instead of
    L, which matters on models of hundreds of nodes.

    The debugger's per-layer statistics (both verify modes, on the same few samples) order the
    nodes the switchable graph did not measure one by one, inside each group (the group keeps
    its rank), and break ties between measured nodes: a node whose own error is furthest above
    rounding, or where the accumulated error jumps most, goes first. Measuring the nodes they
    flag one by one as well was tried and measured worse on the real models (FIX_RESULTS.md):
    their output noise share is large, but their effect on a task metric is not.
    """
    try:
        evidence = layer_evidence(float_model, plan, feeds)
    except QuantDebugError as exc:  # the statistics only order ties: the search goes on without them
        warnings.warn(f"fix ranks without the per-layer statistics: {exc}", stacklevel=2)
        evidence = {}
    scores = SwitchScores(float_model, plan, feeds)
    switches = scores.switches
    nodes = list(switches.nodes)
    everything = range(len(nodes))
    stat = [evidence[n].score if n in evidence else 0.0 for n in nodes]

    def off(members: Sequence[int]) -> Switched:
        return tuple(members), tuple(switches.weight_switches_of({nodes[k] for k in members}))

    def only(members: Sequence[int]) -> Switched:
        keep = set(members)
        act = [k for k in everything if k not in keep]
        on_w = set(switches.weight_switches_of({nodes[k] for k in keep}))
        return tuple(act), tuple(j for j in range(len(switches.weights)) if j not in on_w)

    size = max(1, math.isqrt(len(nodes)))
    groups = [list(range(i, min(i + size, len(nodes)))) for i in range(0, len(nodes), size)]
    base: float | None = None
    group_share = [math.nan] * len(groups)
    if len(groups) > 2:
        items = [off([]), *(off(g) for g in groups), *(only(g) for g in groups)]
        base, *rest = executor.map(scores, items)
        group_share = [noise_share(base, r, a) for r, a in zip(rest[: len(groups)], rest[len(groups) :])]
        order = sorted(range(len(groups)), key=lambda i: -group_share[i])
        units = [k for i in order[: max(2, len(groups) // 4)] for k in groups[i]]
    else:
        order, units = list(range(len(groups))), list(everything)
    items = ([off([])] if base is None else []) + [off([k]) for k in units] + [only([k]) for k in units]
    unit_scores = executor.map(scores, items)
    if base is None:
        base, *unit_scores = unit_scores
    removed, added = unit_scores[: len(units)], unit_scores[len(units) :]
    unit_share = {k: noise_share(base, r, a) for k, r, a in zip(units, removed, added)}
    ranked: list[int] = sorted(unit_share, key=lambda k: (-unit_share[k], -stat[k]))
    for i in order:  # the rest, by their group's harm, and by their statistics within a group
        ranked += sorted((k for k in groups[i] if k not in unit_share), key=lambda k: -stat[k])
    group_of = {k: i for i, g in enumerate(groups) for k in g}
    rows: list[dict[str, Any]] = []
    for position, k in enumerate(ranked):
        ev = evidence.get(nodes[k])
        values = {  # None where not measured: the rows go into strict JSON (statistics files)
            "noise_share": unit_share.get(k),
            "group_noise_share": group_share[group_of[k]],
            "per_layer_rmse/scale": ev.per_layer if ev else None,
            "whole_model_rmse/scale": ev.whole_model if ev else None,
            "statistics_score": stat[k],
        }
        finite = {key: v if v is not None and math.isfinite(v) else None for key, v in values.items()}
        rows.append({"rank": position + 1, "node_name": nodes[k], **finite})
    out = list(dict.fromkeys(nodes[k] for k in ranked))
    return [n for n in out if precisions.get(n, "float") != "float"], rows


def noise_share(base_db: float, removed_db: float, alone_db: float) -> float:
    """A node's share of the all-quantized output noise, from output SQNRs in dB.

    ``base_db``: everything quantized; ``removed_db``: everything but the node; ``alone_db``: the
    node alone. Noise powers relative to the base are 10**(-dB/10); the share is the larger of
    the part that leaving the node in float removes and the part the node alone makes, in [0, 1].
    """

    def power(db: float) -> float:
        if math.isnan(db):
            return math.nan
        return 0.0 if db == math.inf else math.inf if db == -math.inf else 10.0 ** (-db / 10.0)

    total = power(base_db)
    if not total or math.isnan(total) or math.isinf(total):
        return 0.0
    removed = 1.0 - power(removed_db) / total
    alone = power(alone_db) / total
    shares = [v for v in (removed, alone) if not math.isnan(v)]
    return float(min(1.0, max(0.0, *shares))) if shares else 0.0


def sensitivity_table(
    runner: SwitchRunner, evidence: Mapping[str, LayerEvidence] | None = None
) -> list[dict[str, Any]]:
    """Per quantized node: output SQNR with it quantized alone, and with it alone left in float.

    With ``evidence``, each row also has the node's rmse/scale from both verify modes: the rest of
    what the fix ranking reads.
    """
    n_act, n_w = runner.n_act, runner.n_w
    zeros_a, zeros_w = np.zeros(n_act, np.float32), np.zeros(n_w, np.float32)
    ones_a, ones_w = np.ones(n_act, np.float32), np.ones(n_w, np.float32)
    all_q = runner.score(ones_a, ones_w)
    rows = []
    for k, (node, tensor) in enumerate(zip(runner.switches.nodes, runner.switches.tensors)):
        alone_a = zeros_a.copy()
        alone_a[k] = 1
        float_a = ones_a.copy()
        float_a[k] = 0
        row: dict[str, Any] = {
            "node_name": node,
            "tensor_name": tensor,
            "activation_quantized_alone_sqnr_db": runner.score(alone_a, zeros_w),
            "activation_float_alone_sqnr_db": runner.score(float_a, ones_w),
            "all_quantized_sqnr_db": all_q,
        }
        js = runner.switches.weight_switches_of({node})
        if js:
            alone_w, float_w = zeros_w.copy(), ones_w.copy()
            alone_w[js] = 1
            float_w[js] = 0
            row["weights_quantized_alone_sqnr_db"] = runner.score(zeros_a, alone_w)
            row["weights_float_alone_sqnr_db"] = runner.score(ones_a, float_w)
        else:
            row["weights_quantized_alone_sqnr_db"] = math.nan
            row["weights_float_alone_sqnr_db"] = math.nan
        if evidence is not None:
            ev = evidence.get(node)
            row["per_layer_rmse/scale"] = ev.per_layer if ev is not None else math.nan
            row["whole_model_rmse/scale"] = ev.whole_model if ev is not None else math.nan
        rows.append(row)
    return rows
